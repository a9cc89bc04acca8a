import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

// clarion-vue is a file: dependency (clients/vue, linked by npm): the app's own copies of the
// peers must be the only ones in the bundle.
export default defineConfig({
  plugins: [vue()],
  resolve: { dedupe: ['vue', 'pinia'] },
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: true },
  server: {
    // `npm run dev`: the API and the auth routes come from the app on :8000.
    proxy: { '/api': 'http://127.0.0.1:8000', '/broadcasting': 'http://127.0.0.1:8000' },
  },
})
