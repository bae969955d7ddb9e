// Lingering close (as nginx's lingering_close): when the API answers a request whose body is still
// arriving (a 413 for a body over the limit), the connection must not be closed at once. Closing a
// socket with unread data makes the kernel send a RST, and a RST that reaches the client before it
// has read the answer destroys the answer: the conductor would see "connection reset" instead of
// the 413 fault. So the answer goes out with a FIN, what the client still sends is read and thrown
// away, and the socket is closed when the client closes its side or after LINGER_MS at most.
import type { Socket } from 'node:net';

export const LINGER_MS = 10_000;

/** Sockets whose close already lingers. */
const lingering = new WeakSet<Socket>();

/**
 * Replaces the immediate close node's HTTP server does after a `Connection: close` answer
 * (socket.destroySoon) with a lingering one, for this socket only.
 */
export function lingerOnClose(socket: Socket, lingerMs = LINGER_MS): void {
  if (lingering.has(socket)) return;
  lingering.add(socket);
  socket.destroySoon = function lingeringClose(this: Socket) {
    const timer = setTimeout(() => this.destroy(), lingerMs);
    timer.unref();
    this.once('close', () => clearTimeout(timer));
    // The client is done sending: nothing unread can arrive any more.
    this.once('end', () => this.destroy());
    this.on('error', () => this.destroy());
    this.end();
    // Node's parser keeps consuming (and discarding: the request was dumped) what arrives.
    this.resume();
  };
}
