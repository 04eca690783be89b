// Decoded blocks of a zone grid (aligned squares of BLOCK px), kept by bytes, least recently
// used first out. Blocks are the unit of reading and of drawing: panning re-reads nothing
// already seen, and concurrent requests for one block share one read.
export const BLOCK = 256;
const MAX_BYTES = 384 * 1024 * 1024;

export class BlockCache {
  constructor(root, maxBytes = MAX_BYTES) {
    this.root = root;
    this.maxBytes = maxBytes;
    this.blocks = new Map();
    this.bytes = 0;
    this.size = Math.min(BLOCK, root.layout.shard_size);
  }

  /** The block holding a pixel. */
  blockOf(row, col) {
    const s = this.size;
    return { row: Math.floor(row / s) * s, col: Math.floor(col / s) * s, height: s, width: s };
  }

  get(zone, year, depth, row, col, height, width) {
    const key = `${zone}/${year}/${depth}/${row}/${col}/${height}/${width}`;
    let entry = this.blocks.get(key);
    if (entry) {
      this.blocks.delete(key);
      this.blocks.set(key, entry);
      return entry.promise;
    }
    entry = { bytes: height * width * (depth + 4) };
    entry.promise = this.root.readWindow(zone, year, depth, row, col, height, width).catch((err) => {
      this.blocks.delete(key);
      this.bytes -= entry.bytes;
      throw err;
    });
    this.blocks.set(key, entry);
    this.bytes += entry.bytes;
    while (this.bytes > this.maxBytes && this.blocks.size > 1) {
      const [oldest, old] = this.blocks.entries().next().value;
      this.blocks.delete(oldest);
      this.bytes -= old.bytes;
    }
    return entry.promise;
  }
}
