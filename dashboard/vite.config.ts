// The seller dashboard's build: plain Vite + React into dashboard/dist, which the Worker
// serves as Workers Static Assets ([assets] in wrangler.toml). No inline script or style in
// the output, so the page runs under a strict Content-Security-Policy (public/_headers).
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

export default defineConfig({
  root: import.meta.dirname,
  plugins: [react()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // Inline assets would need data: URLs in the CSP; keep every asset a file.
    assetsInlineLimit: 0,
    // The module preload polyfill is bundled, not inlined; no legacy inline loader either.
    modulePreload: { polyfill: false },
    sourcemap: false,
  },
});
