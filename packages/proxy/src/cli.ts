#!/usr/bin/env node
import './cli/check-node.ts';
import { main } from './cli/main.ts';

const code = await main(process.argv.slice(2), {
  out: (s) => void process.stdout.write(s),
  err: (s) => void process.stderr.write(s),
  env: process.env,
  exit: (c) => process.exit(c),
});
if (code !== null) process.exitCode = code;
