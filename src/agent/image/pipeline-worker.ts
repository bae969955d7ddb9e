// The image pipeline's worker threads (hashing, decompression). Their code is tiny and allocates
// little, so they get a small heap: with V8's default young generation each worker added ~15 MiB
// to the agent's resident memory, against ~2 MiB with these limits (measured on Node 24).
import { Worker } from 'node:worker_threads';

const LIMITS = { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 64 };

/** Starts a worker from CommonJS source (no separate file to ship or resolve). */
export function startPipelineWorker(source: string, workerData?: unknown): Worker {
  return new Worker(source, { eval: true, workerData, resourceLimits: LIMITS });
}
