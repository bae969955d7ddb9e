// The worker side of zstd-worker.ts: CommonJS source run in the hash worker's thread (after the
// hashing code, in its own block) or in a worker of its own. Messages carry `z: true` both ways so
// that they and the hashing messages leave each other alone.
//
// In: {start, slots} (a new stream and its input slots), {slot, length} per filled input slot,
// {out, sab, offset, length} per output buffer to fill, {end} after the last slot, {stop}.
// Out: {slotFree}, {out, length} (full, or the last one partly), {done}, {error}, {stopped}.
//
// It drives the native decompressor's synchronous write (zlib's own *Sync functions do the same):
// no libuv thread pool, no allocation per chunk.
export const ZSTD_WORKER_SOURCE = `
{
  const { parentPort } = require('node:worker_threads');
  const zlib = require('node:zlib');
  const EMPTY = new Uint8Array(0);
  let s = null;
  const post = (m) => parentPort.postMessage({ z: true, ...m });
  function pump() {
    while (s && !s.failure && !s.finished) {
      if (!s.cur) {
        s.cur = s.pending.shift();
        if (!s.cur) return;
      }
      if (!s.out) {
        s.out = s.outs.shift();
        if (!s.out) return;
        s.fill = 0;
      }
      const cur = s.cur;
      const out = s.out;
      const room = out.view.length - s.fill;
      const input = cur.end ? EMPTY : s.slots[cur.slot];
      s.handle.writeSync(cur.end ? zlib.constants.ZSTD_e_end : zlib.constants.ZSTD_e_continue, input, cur.off, cur.len, out.view, s.fill, room);
      if (s.failure) break;
      const produced = room - s.state[0];
      const consumed = cur.len - s.state[1];
      // Input left and room for output, yet nothing moved: bytes after the last frame that
      // start no frame (zlib's zstd stops there without an error).
      if (produced === 0 && consumed === 0 && cur.len > 0) {
        s.failure = { message: 'unknown frame descriptor: data after the end of the zstd stream', code: 'ZSTD_error_prefix_unknown' };
        break;
      }
      s.fill += produced;
      cur.off += consumed;
      cur.len = s.state[1];
      const full = s.state[0] === 0;
      if (full) {
        post({ out: out.id, length: s.fill });
        s.out = null;
      }
      if (cur.len === 0 && !full) {
        if (cur.end) {
          if (s.out && s.fill > 0) post({ out: out.id, length: s.fill });
          s.finished = true;
          post({ done: true });
        } else {
          post({ slotFree: cur.slot });
        }
        s.cur = null;
      }
    }
    if (s && s.failure && !s.finished) {
      s.finished = true;
      post({ error: s.failure });
    }
  }
  parentPort.on('message', (m) => {
    if (!m.z) return;
    if (m.start) {
      const d = zlib.createZstdDecompress();
      s = { d, handle: d._handle, state: d._writeState, slots: m.slots.map((sab) => new Uint8Array(sab)), pending: [], outs: [], cur: null, out: null, fill: 0, finished: false, failure: null };
      const mine = s;
      s.handle.onerror = (message, errno, code) => { mine.failure = { message, code }; };
      return;
    }
    if (m.stop) {
      if (s) s.handle.close();
      s = null;
      post({ stopped: true }); // no output buffer is written to after this
      return;
    }
    if (!s) return;
    if (m.sab) s.outs.push({ id: m.out, view: new Uint8Array(m.sab, m.offset, m.length) });
    else if (m.end) s.pending.push({ end: true, off: 0, len: 0 });
    else s.pending.push({ slot: m.slot, off: 0, len: m.length });
    pump();
  });
}
`;
