// Builds the page script and the map module into dist/, which the server embeds and serves under /static/.
// File names carry no hash: the server versions URLs with the content's SHA-256 instead, so the built
// files are stable and can be committed.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/static/',
  publicDir: false,
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    target: 'es2022',
    cssCodeSplit: true,
    modulePreload: false,
    chunkSizeWarningLimit: 1500,
    rollupOptions: {
      input: { groundwork: 'src/main.js' },
      output: {
        entryFileNames: '[name].js',
        chunkFileNames: '[name].js',
        assetFileNames: '[name][extname]',
      },
    },
  },
});
