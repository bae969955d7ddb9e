#!/usr/bin/env node
// npm run demo: the agent's main job on an embedded default, with nothing to configure.
// Makes a sparse 4.5 GiB file-backed loop device that looks like a used disk (GPT, two partitions,
// an ext4 filesystem), starts the agent limited to that device, and drives it through the typed
// client as a conductor would: status, inventory, clean steps, metadata erase, then deploys a small
// whole-disk image served over local HTTP (streamed, sha256-verified), checks the file inside it,
// reads the partition UUIDs and collects the logs. Cleans up afterwards.
import { execFileSync, spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentClient } from '../dist/conductor/agent-client.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const sh = (cmd, args) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
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
let server = null;
try {
  step('making a used-looking disk: 4.5 GiB (sparse) loop device with GPT, 2 partitions, ext4');
  sh('truncate', ['-s', '4608M', image]);
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

  step('poll.get_hardware_info');
  const inv = await client.getHardwareInfo();
  console.log(`  ${inv.cpu.count} x ${inv.cpu.model_name}, ${Math.round(inv.memory.total / 2 ** 30)} GiB RAM, disks: ${inv.disks.map((d) => `${d.name} ${(d.size / 2 ** 30).toFixed(1)} GiB`).join(', ')}`);

  step('deploying a whole-disk image: 64 MiB, GPT, ext4 with /etc/motd, served on 127.0.0.1');
  const rootfs = join(dir, 'rootfs');
  mkdirSync(join(rootfs, 'etc'), { recursive: true });
  writeFileSync(join(rootfs, 'etc/motd'), 'deployed by ferrum\n');
  const osImage = join(dir, 'os.img');
  sh('truncate', ['-s', '64M', osImage]);
  sh('sgdisk', ['-n', '1:2048:0', '-t', '1:8300', osImage]);
  sh('mke2fs', ['-q', '-t', 'ext4', '-L', 'root', '-d', rootfs, '-E', 'offset=1048576', osImage, '62M']);
  const bytes = readFileSync(osImage);
  const digest = createHash('sha256').update(bytes).digest('hex');
  server = createServer((req, res) => res.writeHead(200, { 'content-length': bytes.length }).end(req.method === 'HEAD' ? undefined : bytes));
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const imageUrl = `http://127.0.0.1:${server.address().port}/os.img`;
  const t2 = Date.now();
  const written = await client.prepareImage({ id: 'os.img', urls: [imageUrl], os_hash_algo: 'sha256', os_hash_value: digest, disk_format: 'raw' });
  console.log(`  done in ${Date.now() - t2} ms:`, written.result);
  shOk('partprobe', [loop]);
  console.log('  /etc/motd on the deployed disk:', shOk('debugfs', ['-R', 'cat /etc/motd', `${loop}p1`]).trim());
  console.log('  standby.get_partition_uuids:', JSON.stringify(await client.getPartitionUuids()));

  step('log.collect_system_logs');
  const logs = await client.collectSystemLogs();
  console.log(`  ${Buffer.from(logs.system_logs, 'base64').length} bytes of tar.gz`);

  step('command history (GET /v1/commands/)');
  for (const c of await client.listCommands()) console.log(`  ${c.command_name.padEnd(22)} ${c.command_status}`);
  console.log('\ndemo finished: the agent touched only the loop device it was given.');
} catch (err) {
  console.error('demo failed:', err);
  process.exitCode = 1;
} finally {
  await client?.close();
  server?.close();
  if (agent && agent.exitCode === null) {
    agent.kill('SIGTERM');
    await new Promise((r) => agent.once('exit', r));
  }
  if (loop) shOk('losetup', ['-d', loop]);
  rmSync(dir, { recursive: true, force: true });
}
