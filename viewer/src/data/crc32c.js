// zarrita's crc32c codec strips the 4-byte checksum without checking it; tessera-ray stores
// carry a CRC32C after every inner chunk and every shard index so that a reader detects a
// corrupt object instead of decoding wrong numbers. This replaces the codec in zarrita's
// registry with one that checks (CRC32C from the crc-32 package).
import * as zarr from "zarrita";
import CRC32C from "crc-32/crc32c.js";

export class ChecksumError extends Error {
  constructor(message) {
    super(message);
    this.name = "ChecksumError";
  }
}

class CheckedCrc32c {
  kind = "bytes_to_bytes";
  static fromConfig() {
    return new CheckedCrc32c();
  }
  encode() {
    throw new Error("crc32c: this viewer only reads");
  }
  decode(bytes) {
    const n = bytes.byteLength - 4;
    if (n < 0) throw new ChecksumError("a chunk is shorter than its CRC32C");
    const body = new Uint8Array(bytes.buffer, bytes.byteOffset, n);
    const stored = new DataView(bytes.buffer, bytes.byteOffset + n, 4).getUint32(0, true);
    const actual = CRC32C.buf(body) >>> 0;
    if (stored !== actual) throw new ChecksumError("a chunk failed its CRC32C check (the object is corrupt)");
    return body;
  }
  computeEncodedSize(size) {
    return size + 4;
  }
}

export function installCheckedCrc32c() {
  zarr.registry.set("crc32c", () => CheckedCrc32c);
}
