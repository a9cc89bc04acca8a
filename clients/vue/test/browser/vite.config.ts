// Builds the browser test's page the way an app's Vite build would use the package: from dist/.
import { resolve } from 'node:path'
import { defineConfig } from 'vite'

export default defineConfig({
  root: resolve(import.meta.dirname, 'page'),
  base: './',
  logLevel: 'warn',
  resolve: { alias: { 'clarion-vue': resolve(import.meta.dirname, '../../dist/clarion-vue.js') } },
  build: {
    outDir: resolve(import.meta.dirname, '../../test-results/browser-page'),
    emptyOutDir: true,
    minify: false,
    target: 'es2022',
  },
})
