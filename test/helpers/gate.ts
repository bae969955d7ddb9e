// A promise with its resolve/reject exposed, for tests that hold something (a running command, a
// device preparation) until they let it go. Promise.withResolvers, which Node 20 lacks.
export interface Gate<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
}

export function gate<T = unknown>(): Gate<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
