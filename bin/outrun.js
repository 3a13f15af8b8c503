#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx, so `npm start` never serves a stale build.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli.ts');
