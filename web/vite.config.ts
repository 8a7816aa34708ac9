import { svelte } from '@sveltejs/vite-plugin-svelte';
import tailwindcss from '@tailwindcss/vite';
import { defineConfig } from 'vitest/config';

// `npm run dev` serves the app and forwards the API to a local kezchat
// (KEZ_DEV_SERVER, default http://127.0.0.1:6969), so the app sees one
// origin exactly as when kezchat serves the built files.
const api = process.env.KEZ_DEV_SERVER ?? 'http://127.0.0.1:6969';

export default defineConfig({
  plugins: [tailwindcss(), svelte()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // one small app: no inline assets (the CSP allows only same-origin scripts)
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
  server: {
    proxy: {
      '/v1': { target: api, changeOrigin: false },
      '/.well-known': { target: api },
    },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
    // the machine is shared: sealing and storing megabytes takes seconds there
    testTimeout: 30_000,
  },
});
