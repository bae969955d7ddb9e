#!/usr/bin/env node
// Run inside the e2e test's network namespace: forwards TCP from the bridge address (which the
// test process can reach over its veth) to a VM on the bridge (which it cannot: the namespace
// routes nothing and the VMs have no default route). One process, any number of ports.
// Usage: node tcp-forward.mjs --bind ADDR --to VM_ADDR LOCAL_PORT:VM_PORT [...]
import { createConnection, createServer } from 'node:net';

const args = process.argv.slice(2);
const opt = { bind: '', to: '' };
const pairs = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--bind') opt.bind = args[++i];
  else if (args[i] === '--to') opt.to = args[++i];
  else pairs.push(args[i].split(':').map(Number));
}
if (!opt.bind || !opt.to || pairs.length === 0 || pairs.some((p) => p.length !== 2 || p.some((n) => !Number.isInteger(n)))) {
  console.error('usage: tcp-forward.mjs --bind ADDR --to VM_ADDR LOCAL_PORT:VM_PORT [...]');
  process.exit(2);
}
for (const [local, remote] of pairs) {
  createServer((client) => {
    const upstream = createConnection({ host: opt.to, port: remote });
    client.pipe(upstream).pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
  })
    .on('error', (err) => {
      console.error(`tcp-forward ${opt.bind}:${local}: ${err.message}`);
      process.exit(1);
    })
    .listen(local, opt.bind, () => console.log(`tcp-forward ${opt.bind}:${local} -> ${opt.to}:${remote}`));
}
