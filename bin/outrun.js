#!/usr/bin/env node
// Runs the compiled CLI in dist/ (`npm run build` makes it; `npm run dev` runs the sources through tsx).
import { existsSync } from 'node:fs';
import { URL } from 'node:url';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(cli)) {
  console.error('outrun: the build is missing (dist/cli.js). Run `npm run build` in the Outrun directory.');
  process.exit(1);
}
await import(cli.href);
