#!/usr/bin/env node
// ferrum-agent: the deploy-ramdisk agent. Settings come from the kernel command line (ipa-*),
// /etc/ferrum/agent.conf, FERRUM_* variables and flags (highest wins); see --help.
import { runAgentCli } from './cli.js';

runAgentCli(process.argv.slice(2)).then(
  (code) => {
    if (code !== null) process.exit(code);
  },
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
