#!/usr/bin/env node
// `envoy …` is `remora envoy …`: installed as `envoy`, Remora runs where Istio's agent (or
// any script) execs Envoy, with Envoy's command line unchanged.
import './cli/check-node.ts';
import { main } from './cli/main.ts';

const code = await main(['envoy', ...process.argv.slice(2)], {
  out: (s) => void process.stdout.write(s),
  err: (s) => void process.stderr.write(s),
  env: process.env,
  exit: (c) => process.exit(c),
});
if (code !== null) process.exitCode = code;
