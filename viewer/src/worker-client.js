// The page's side of the worker protocol (worker.js): call(op, args, {onProgress, onPart})
// returns a Promise of the result; cancel(id) asks a long render to stop between blocks.
export class WorkerClient {
  constructor(url) {
    this.worker = new Worker(url, { type: "module" });
    this.next = 1;
    this.pending = new Map();
    this.worker.onmessage = (event) => this.receive(event.data);
    this.worker.onerror = (event) => {
      event.preventDefault();
      const err = new Error(`the viewer's worker failed: ${event.message || "it could not start"}`);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
      this.failed = err;
    };
  }

  call(op, args = {}, { onProgress, onPart } = {}) {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.next++;
    const promise = new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onProgress, onPart });
    });
    promise.id = id;
    this.worker.postMessage({ id, op, args });
    return promise;
  }

  cancel(id) {
    if (this.pending.has(id)) this.worker.postMessage({ id: 0, op: "cancel", args: { target: id } });
  }

  receive({ id, result, error, progress, part }) {
    const p = this.pending.get(id);
    if (!p) return;
    if (progress !== undefined) return p.onProgress && p.onProgress(progress);
    if (part !== undefined) return p.onPart && p.onPart(part);
    this.pending.delete(id);
    if (error !== undefined) p.reject(new Error(error));
    else p.resolve(result);
  }
}
