import { resolve } from 'node:path'
import vue from '@vitejs/plugin-vue'
import { defineConfig } from 'vitest/config'

const dropin = {
  environment: 'happy-dom' as const,
  // The test servers listen on ports of their own; a browser app would reach them same-origin.
  environmentOptions: { happyDOM: { settings: { fetch: { disableSameOriginPolicy: true } } } },
  include: ['test/dropin/**/*.test.ts'],
  testTimeout: 60_000,
  hookTimeout: 60_000,
}

export default defineConfig({
  test: {
    projects: [
      {
        test: { name: 'unit', environment: 'happy-dom', include: ['test/unit/**/*.test.ts'], testTimeout: 20_000 },
      },
      // The same example and tests, once on @laravel/echo-vue as written...
      { plugins: [vue()], test: { ...dropin, name: 'dropin:@laravel/echo-vue', env: { DROPIN_LIBRARY: '@laravel/echo-vue' } } },
      // ...and once with its import switched to clarion-vue.
      {
        plugins: [vue()],
        resolve: { alias: { '@laravel/echo-vue': resolve(import.meta.dirname, 'src/index.ts') } },
        test: { ...dropin, name: 'dropin:clarion-vue', env: { DROPIN_LIBRARY: 'clarion-vue' } },
      },
    ],
  },
})
