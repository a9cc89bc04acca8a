import { resolve } from 'node:path'
import { defineConfig } from 'vite'

// The app's own Vite build replaces import.meta.env.VITE_* (laravel-echo's defaults, as
// @laravel/echo-vue reads them); this build must leave them verbatim, guarded for non-Vite users.
const ENV_NAMES = [
  'VITE_REVERB_APP_KEY',
  'VITE_REVERB_HOST',
  'VITE_REVERB_PORT',
  'VITE_REVERB_SCHEME',
  'VITE_PUSHER_APP_KEY',
  'VITE_PUSHER_APP_CLUSTER',
  'VITE_PUSHER_HOST',
  'VITE_PUSHER_PORT',
]
const keepEnv = Object.fromEntries(
  ENV_NAMES.map((name) => [`import.meta.env.${name}`, `(import.meta.env === undefined ? undefined : import.meta.env.${name})`]),
)

export default defineConfig({
  define: keepEnv,
  build: {
    lib: {
      entry: resolve(import.meta.dirname, 'src/index.ts'),
      formats: ['es'],
      fileName: () => 'clarion-vue.js',
    },
    rollupOptions: {
      external: ['vue', 'pinia', 'pusher-js', 'laravel-echo', 'mitt'],
    },
    outDir: resolve(import.meta.dirname, 'dist'),
    emptyOutDir: true,
    sourcemap: true,
    minify: false,
    target: 'es2022',
  },
})
