#!/usr/bin/env node
// npm run demo: the agent's main job on an embedded default, with nothing to configure.
// Makes a 256 MiB file-backed loop device that looks like a used disk (GPT, two partitions, an
// ext4 filesystem), starts the agent limited to that device, and drives it through the typed
// client as a conductor would: status, clean steps, metadata erase, logs. Cleans up afterwards.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentClient } from '../dist/conductor/agent-client.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const sh = (cmd, args) => execFileSync(cmd, args, { encoding: 'utf8' });
const shOk = (cmd, args) => {
  try {
    return sh(cmd, args);
  } catch (err) {
    return String(err.stdout ?? '') + String(err.stderr ?? '');
  }
};
const step = (text) => console.log(`\n== ${text}`);

if (process.getuid?.() !== 0) {
  console.error('demo: run as root (it creates a loop device)');
  process.exit(1);
}

const dir = mkdtempSync(join(tmpdir(), 'ferrum-demo-'));
const image = join(dir, 'disk.img');
let loop = null;
let agent = null;
let client = null;
try {
  step('making a used-looking disk: 256 MiB loop device with GPT, 2 partitions, ext4');
  sh('truncate', ['-s', '256M', image]);
  loop = sh('losetup', ['--find', '--show', image]).trim();
  sh('sgdisk', ['-n', '1:0:+64M', '-t', '1:8300', '-n', '2:0:+64M', '-t', '2:8200', loop]);
  sh('partprobe', [loop]);
  sh('mkfs.ext4', ['-q', '-L', 'olddata', `${loop}p1`]);
  console.log(shOk('wipefs', ['-n', `${loop}p1`]).trim());
  console.log(shOk('sgdisk', ['-p', loop]).split('\n').slice(-4).join('\n'));

  step(`starting ferrum-agent limited to ${loop} (standalone: no conductor)`);
  const port = 19999;
  agent = spawn(process.execPath, [
    join(root, 'dist/agent/main.js'),
    '--standalone', '--cmdline-file', '/dev/null', '--devices', loop,
    '--listen-host', '127.0.0.1', '--listen-port', String(port), '--state-dir', dir,
  ], { stdio: ['ignore', 'ignore', 'inherit'] });
  client = new AgentClient({ url: `http://127.0.0.1:${port}`, pollIntervalMs: 200 });
  const t0 = Date.now();
  for (;;) {
    try {
      const status = await client.status();
      console.log(`API up after ${Date.now() - t0} ms:`, status);
      break;
    } catch {
      if (Date.now() - t0 > 15000) throw new Error('agent did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  step('clean.get_clean_steps');
  const steps = await client.getCleanSteps({}, []);
  for (const s of steps.clean_steps.GenericHardwareManager) console.log(`  ${s.step.padEnd(24)} priority ${s.priority}`);
  console.log('  versions:', steps.hardware_manager_version);

  step('clean.execute_clean_step erase_devices_metadata');
  const t1 = Date.now();
  const res = await client.executeCleanStep({ step: 'erase_devices_metadata', interface: 'deploy', priority: 99 }, {}, [], steps.hardware_manager_version);
  console.log(`  done in ${Date.now() - t1} ms:`, JSON.stringify(res));
  console.log('  sgdisk -p:', shOk('sgdisk', ['-p', loop]).includes('Number  Start') && !/^\s+1\s/m.test(shOk('sgdisk', ['-p', loop])) ? 'no partitions' : 'PARTITIONS LEFT');
  console.log('  wipefs -n:', shOk('wipefs', ['-n', loop]).trim() || '(no signatures)');
  console.log('  blkid -p :', shOk('blkid', ['-p', loop]).trim() || '(nothing found)');

  step('log.collect_system_logs');
  const logs = await client.collectSystemLogs();
  console.log(`  ${Buffer.from(logs.system_logs, 'base64').length} bytes of tar.gz`);

  step('command history (GET /v1/commands/)');
  for (const c of await client.listCommands()) console.log(`  ${c.command_name.padEnd(22)} ${c.command_status}`);
  console.log('\ndemo finished: the agent wiped only the loop device it was given.');
} catch (err) {
  console.error('demo failed:', err);
  process.exitCode = 1;
} finally {
  await client?.close();
  if (agent && agent.exitCode === null) {
    agent.kill('SIGTERM');
    await new Promise((r) => agent.once('exit', r));
  }
  if (loop) shOk('losetup', ['-d', loop]);
  rmSync(dir, { recursive: true, force: true });
}
