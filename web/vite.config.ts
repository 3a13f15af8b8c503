import { fileURLToPath } from 'node:url';
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

const root = fileURLToPath(new URL('.', import.meta.url));

/** Builds the web app into web/dist, which `outrun serve` serves at `/`. */
export default defineConfig({
  root,
  plugins: [react()],
  build: {
    outDir: fileURLToPath(new URL('./dist', import.meta.url)),
    emptyOutDir: true,
    // No source maps: the built app is served publicly and its sources stay private.
    sourcemap: false,
    chunkSizeWarningLimit: 800,
  },
  server: {
    // `npm run dev:web`-style development against a running server: `vite web` proxies the API.
    proxy: { '/v1': process.env.OUTRUN_URL ?? 'http://127.0.0.1:3000' },
  },
});
