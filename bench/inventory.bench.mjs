// Inventory and start-up: cold and warm poll.get_hardware_info, time until the API answers, and
// idle memory, against the IPA 9.4.3 figures measured on this kind of machine (issue 3).
import { command, fmt, median, rssKiB, startAgent } from './lib.mjs';

const IPA = { inventoryMs: 1370, idleRssMiB: [78, 81], apiStartMs: 1000 };
const RUNS = Number(process.env.BENCH_RUNS ?? 7);

export async function run() {
  const starts = [];
  const colds = [];
  const idle = [];
  for (let i = 0; i < RUNS; i++) {
    const a = await startAgent();
    starts.push(a.startMs);
    await new Promise((r) => setTimeout(r, 1500));
    idle.push(rssKiB(a.proc.pid) / 1024);
    colds.push((await command(a.url, 'poll.get_hardware_info')).ms);
    await a.stop();
  }
  const a = await startAgent();
  await command(a.url, 'poll.get_hardware_info');
  const warms = [];
  for (let i = 0; i < 30; i++) warms.push((await command(a.url, 'poll.get_hardware_info')).ms);
  const afterRss = rssKiB(a.proc.pid) / 1024;
  await a.stop();

  const cold = median(colds);
  const warm = median(warms);
  const start = median(starts);
  const rss = median(idle);
  console.log('inventory (poll.get_hardware_info over HTTP, bundled agent, median)');
  console.log(`  cold : ${fmt(cold)}  (IPA ${IPA.inventoryMs} ms: ${(IPA.inventoryMs / cold).toFixed(1)}x faster; target <= 137 ms)`);
  console.log(`  warm : ${fmt(warm)}  (IPA ${IPA.inventoryMs} ms: ${(IPA.inventoryMs / warm).toFixed(1)}x faster; target <= 50 ms)`);
  console.log(`  API answers after start: ${fmt(start)}  (IPA ~${IPA.apiStartMs} ms; target <= 300 ms)`);
  console.log(`  idle RSS: ${fmt(rss, 'MiB')}  (IPA ${IPA.idleRssMiB.join('-')} MiB; ${(rss / IPA.idleRssMiB[0]).toFixed(2)}x)  after 31 inventories: ${fmt(afterRss, 'MiB')}`);
  console.log(`  runs: cold ${colds.map((x) => x.toFixed(0)).join(' ')} | start ${starts.map((x) => x.toFixed(0)).join(' ')} ms`);
  return { coldMs: cold, warmMs: warm, startMs: start, idleRssMiB: rss };
}

if (import.meta.url === `file://${process.argv[1]}`) await run();
