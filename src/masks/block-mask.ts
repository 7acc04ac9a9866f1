/**
 * BlockMask (DESIGN §4): which key blocks each query block attends, in the kernel-friendly form the
 * block-sparse attention kernels read. Block sizes blockQ x blockK are powers of two in 16..128
 * (need not be square). For every (b|1, h|1) and query block there is a sorted list of **full** key
 * blocks (every in-range element visible) and a sorted list of **partial** key blocks, each with its
 * element bitmap (blockQ rows of blockK bits, ceil(blockK/32) 32-bit words per row, bit j of row r =
 * query q0 + r sees key k0 + j). Tail blocks (N not a multiple of the block size) hold only the
 * in-range tokens. The transposed lists the backward needs are derived by the kernels.
 *
 * Storage is five int32 tensors (`buffers`), the form ops consume; builders also keep the host
 * arrays so that inspection (`toDense`, `density`) and set operations (`and`, `or`) are immediate.
 * Masks produced by enqueued work (mobaMask, xattentionMask) fetch theirs with `await mask.host()`.
 */
import { AttnkitError, argError, callNative, checkKnownOptions, show } from '../errors.js';
import { native } from '../native.js';
import { empty, tensor, type Tensor } from '../tensor.js';
import { parseDevice, type Device } from '../stream.js';
import * as builders from './builders.js';
import {
  appendBlock,
  checkGeometry,
  fullRow,
  MaskBuilder,
  type BlockMaskData,
  type BlockMaskGeometry,
  type BlockSizes,
  type BuiltMask,
} from './mask-builder.js';

export type { BlockMaskData, BlockMaskGeometry, BlockSizes } from './mask-builder.js';
export type { NeighborhoodMaskParams } from './builders.js';

const LISTS = ['fullOffsets', 'fullIndices', 'partialOffsets', 'partialIndices', 'partialBits'] as const;

/**
 * Which key blocks each query block attends, in the form the block-sparse kernels read: per (b, h)
 * and query block, the full key blocks and the partial ones with their element bitmaps. Build one
 * with the static builders (or `mobaMask` / `xattentionMask`), combine with `and` / `or`, and pass
 * it to `blockSparseAttention`.
 *
 * @example
 * ```ts
 * const mask = BlockMask.slidingWindow(4096, 4096, 512, 0).or(BlockMask.fromPredicate((b, h, q, k) => k < 64, { Nq: 4096, Nk: 4096 }));
 * await mask.density(); // fraction of visible pairs
 * const { out } = blockSparseAttention(q, k, v, mask);
 * ```
 */
export class BlockMask {
  /** Batch extent: 1 (shared by every batch entry) or the problem's B. */
  readonly B: number;
  /** Head extent: 1 (shared by every head) or the problem's query heads H. */
  readonly H: number;
  /** Query tokens. */
  readonly Nq: number;
  /** Key tokens. */
  readonly Nk: number;
  /** Query block size (16, 32, 64 or 128). */
  readonly blockQ: number;
  /** Key block size (16, 32, 64 or 128). */
  readonly blockK: number;
  /** Where the buffers live (the device of the tensors it applies to). */
  readonly device: Device;
  /** Number of query blocks: ceil(Nq / blockQ). */
  readonly qBlocks: number;
  /** Number of key blocks: ceil(Nk / blockK). */
  readonly kBlocks: number;
  #buffers: Tensor[] | null = null;
  #host: BlockMaskData | null;
  #disposed = false;
  // This mask's copies on other devices (`to`), made once per device.
  #copies = new Map<Device, BlockMask>();
  // The kernels' tile plan on a CUDA device (native/cuda/block_sparse/plan.h), built by the first op
  // that uses the mask there and read by every later one.
  #plan: { tensor: Tensor; built: boolean } | null = null;

  /** @internal Use the builders, or `BlockMask.fromData`. */
  constructor(g: BlockMaskGeometry, host: BlockMaskData | null, buffers: Tensor[] | null, device: Device = 'cpu') {
    this.B = g.B;
    this.H = g.H;
    this.Nq = g.Nq;
    this.Nk = g.Nk;
    this.blockQ = g.blockQ;
    this.blockK = g.blockK;
    this.device = device;
    this.qBlocks = Math.ceil(g.Nq / g.blockQ);
    this.kBlocks = Math.ceil(g.Nk / g.blockK);
    this.#host = host;
    this.#buffers = buffers;
  }

  /** Words per bitmap row. */
  get wordsPerRow(): number {
    return Math.ceil(this.blockK / 32);
  }

  /** B, H, Nq, Nk and the block sizes. */
  get geometry(): BlockMaskGeometry {
    return { B: this.B, H: this.H, Nq: this.Nq, Nk: this.Nk, blockQ: this.blockQ, blockK: this.blockK };
  }

  /**
   * Causal mask, bottom-right aligned like `attention`'s: query i sees keys j <= i + Nk - Nq.
   * Blocks default to 64 x 64.
   *
   * @example
   * ```ts
   * const mask = BlockMask.causal(4096, 4096, { blockQ: 64, blockK: 64 });
   * const { out } = blockSparseAttention(q, k, v, mask);
   * ```
   */
  static causal(Nq: number, Nk: number, opts?: BlockSizes): BlockMask {
    return BlockMask.fromBuilt(builders.causal(Nq, Nk, opts));
  }

  /**
   * Sliding window (FlashAttention convention, bottom-right aligned): query i, aligned at
   * a = i + Nk - Nq, sees keys a - left ... a + right; -1 = unbounded on that side. With
   * `causal`, right is clamped to 0.
   *
   * @example
   * ```ts
   * // each query sees the 256 keys before it and itself
   * const mask = BlockMask.slidingWindow(8192, 8192, 256, 0);
   * ```
   */
  static slidingWindow(Nq: number, Nk: number, left: number, right: number, opts?: BlockSizes & { causal?: boolean }): BlockMask {
    return BlockMask.fromBuilt(builders.slidingWindow(Nq, Nk, left, right, opts));
  }

  /**
   * Packed variable-length sequences: tokens attend within their own document (block-diagonal),
   * optionally causally. Lengths may be 0 or 1; the mask covers their sum.
   *
   * @example
   * ```ts
   * const mask = BlockMask.documents([100, 37, 250], { causal: true }); // 387 tokens
   * ```
   */
  static documents(seqLens: readonly number[], opts?: BlockSizes & { causal?: boolean }): BlockMask {
    return BlockMask.fromBuilt(builders.documents(seqLens, opts));
  }

  /**
   * The neighborhood-attention pattern (NATTEN semantics, docs/neighborhood.md) over the tokens of
   * a 1-D, 2-D or 3-D grid in row-major order: per axis a kernel size, and optionally a stride
   * (default 1), a dilation (default 1) and causality (default false). Each is one value for every
   * axis (`kernelSize: 7`, `causal: true`) or an array of one per axis, as na2d takes them; a window
   * that does not fit its axis (kernel x dilation > size, stride > kernel) is refused.
   *
   * @example
   * ```ts
   * // a 56 x 56 image, 7 x 7 windows: the pattern na2d computes, as a block mask
   * const mask = BlockMask.neighborhood({ size: [56, 56], kernelSize: [7, 7] }, { blockQ: 64, blockK: 64 });
   * ```
   */
  static neighborhood(params: builders.NeighborhoodMaskParams, opts?: BlockSizes): BlockMask {
    return BlockMask.fromBuilt(builders.neighborhood(params, opts));
  }

  /**
   * From a block-level boolean grid [B|1, H|1, Qb, Kb] (row-major, nonzero = visible), with
   * Qb = ceil(Nq / blockQ) and Kb = ceil(Nk / blockK): listed blocks are full.
   *
   * @example
   * ```ts
   * // 128 tokens in 64 x 64 blocks: block row 0 sees block 0, block row 1 sees both
   * const mask = BlockMask.fromBlocks([1, 0, 1, 1], [1, 1, 2, 2], { Nq: 128, Nk: 128 });
   * ```
   */
  static fromBlocks(blocks: ArrayLike<number | boolean>, shape: readonly [number, number, number, number], opts: { Nq: number; Nk: number } & BlockSizes): BlockMask {
    return BlockMask.fromBuilt(builders.fromBlocks(blocks, shape, opts));
  }

  /**
   * From a predicate evaluated once per element at build time (B * H * Nq * Nk calls):
   * fn(b, h, q, k) says whether query q of batch b, head h sees key k. `onProgress(fraction)` is
   * called after every query block.
   *
   * @example
   * ```ts
   * // every query sees the first 4 keys (attention sinks) and the keys within 64 before it
   * const mask = BlockMask.fromPredicate((b, h, q, k) => k < 4 || (k <= q && q - k < 64), { Nq: 1024, Nk: 1024 });
   * ```
   */
  static fromPredicate(
    fn: (b: number, h: number, q: number, k: number) => boolean,
    opts: { B?: number; H?: number; Nq: number; Nk: number; onProgress?: (fraction: number) => void } & BlockSizes,
  ): BlockMask {
    return BlockMask.fromBuilt(builders.fromPredicate(fn, opts));
  }

  /** @internal What a builder produced. */
  static fromBuilt(m: BuiltMask): BlockMask {
    return new BlockMask(m.geometry, m.data, null);
  }

  /** A mask from explicit lists (validated: offsets, sorted in-range indices, bitmap size). */
  static fromData(g: BlockMaskGeometry, d: BlockMaskData): BlockMask {
    const op = 'BlockMask.fromData';
    checkGeometry(op, g);
    if (d === null || typeof d !== 'object') throw argError('ERR_ATTNKIT_ARGUMENT', op, 'data', 'to be an object of five typed arrays', show(d));
    checkKnownOptions(op, d, LISTS, 'data');
    // The buffers are read as int32 bits: any other array would be reinterpreted, not converted.
    for (const name of LISTS)
      if (!(d[name] instanceof Int32Array || d[name] instanceof Uint32Array))
        throw argError('ERR_ATTNKIT_ARGUMENT', op, name, 'to be an Int32Array or a Uint32Array', show(d[name]));
    const m = new BlockMask(g, d, null);
    const rows = g.B * g.H * m.qBlocks;
    for (const [name, off, idx] of [
      ['full', d.fullOffsets, d.fullIndices],
      ['partial', d.partialOffsets, d.partialIndices],
    ] as const) {
      if (off.length !== rows + 1 || off[0] !== 0 || off[rows] !== idx.length)
        throw argError('ERR_ATTNKIT_SHAPE', op, `${name}Offsets`, `to have ${rows + 1} entries from 0 to the index count ${idx.length}`, `${off.length} entries ending at ${off[off.length - 1]}`);
      for (let r = 0; r < rows; r++)
        if (off[r + 1]! < off[r]!)
          throw argError('ERR_ATTNKIT_ARGUMENT', op, `${name}Offsets`, 'to be non-decreasing', `${off[r]} then ${off[r + 1]} at row ${r}`);
      for (let r = 0; r < rows; r++)
        for (let i = off[r]!; i < off[r + 1]!; i++)
          if (idx[i]! < 0 || idx[i]! >= m.kBlocks || (i > off[r]! && idx[i]! <= idx[i - 1]!))
            throw argError('ERR_ATTNKIT_ARGUMENT', op, `${name}Indices`, `to be increasing key block indices in [0, ${m.kBlocks}) per row`, `${idx[i]} in row ${r}`);
    }
    const words = d.partialIndices.length * g.blockQ * m.wordsPerRow;
    if (d.partialBits.length !== words)
      throw argError('ERR_ATTNKIT_SHAPE', op, 'partialBits', `to have ${words} words (blockQ x ceil(blockK/32) per partial block)`, String(d.partialBits.length));
    return m;
  }

  /**
   * This mask on `device`: itself when it is there already, else a copy whose buffers are uploaded
   * (or copied between devices) once and cached with this mask, so every later `to(device)` and every
   * op that meets this mask with tensors on `device` reuses them. A host mask's copy keeps its host
   * lists (inspection stays immediate). Disposing this mask disposes its copies.
   *
   * @example
   * ```ts
   * const mask = BlockMask.causal(8192, 8192).to('cuda:0'); // uploaded once
   * const { out } = blockSparseAttention(q, k, v, mask); // q, k, v on cuda:0
   * ```
   */
  to(device: Device): BlockMask {
    const op = 'BlockMask.to';
    const d = parseDevice(op, 'device', device);
    this._checkLive(op, 'mask');
    if (d === this.device) return this;
    let m = this.#copies.get(d);
    if (!m) {
      m = this.#host
        ? new BlockMask(this.geometry, this.#host, null, d)
        : new BlockMask(this.geometry, null, this.#buffers!.map((t) => t.to(d)), d);
      m.buffers(); // the upload, enqueued now
      this.#copies.set(d, m);
    }
    return m;
  }

  /** Whether `dispose()` was called (a disposed mask cannot be used by ops or copied). */
  get disposed(): boolean {
    return this.#disposed;
  }

  /** @internal Throws ERR_ATTNKIT_DISPOSED naming `op` and `arg` once this mask is disposed. */
  _checkLive(op: string, arg: string): void {
    if (this.#disposed) throw new AttnkitError('ERR_ATTNKIT_DISPOSED', op, `${op}: '${arg}' was disposed and cannot be used`, arg);
  }

  /**
   * @internal The device plan of this (CUDA) mask: its int32 buffer, sized by the native layout for
   * the mask's geometry and list capacities, and whether an op still has to build it. `_planBuilt`
   * records that an op was enqueued that builds it (later ops on any stream wait for that one).
   */
  _devicePlan(op: string): { tensor: Tensor; build: boolean } {
    if (!this.#plan) {
      const b = this.buffers();
      const ints = callNative(op, () =>
        native.bsPlanInts({ maskB: this.B, maskH: this.H, Nq: this.Nq, Nk: this.Nk, blockQ: this.blockQ, blockK: this.blockK, listed: b[1]!.size + b[3]!.size }),
      );
      this.#plan = { tensor: empty([ints], { dtype: 'int32', device: this.device }), built: false };
    }
    return { tensor: this.#plan.tensor, build: !this.#plan.built };
  }

  /** @internal See `_devicePlan`. */
  _planBuilt(): void {
    if (this.#plan) this.#plan.built = true;
  }

  /** The five int32 tensors the kernels read: full offsets/indices, partial offsets/indices, bitmaps. */
  buffers(): Tensor[] {
    this._checkLive('BlockMask.buffers', 'mask');
    if (!this.#buffers) {
      const d = this.#host!;
      const i32 = (a: Int32Array | Uint32Array) => tensor(new Int32Array(a.buffer, a.byteOffset, a.length), [a.length], { dtype: 'int32', device: this.device });
      this.#buffers = [d.fullOffsets, d.fullIndices, d.partialOffsets, d.partialIndices, d.partialBits].map(i32);
    }
    return this.#buffers;
  }

  /** The host lists (reads them back once when the mask was produced by enqueued work). */
  async host(): Promise<BlockMaskData> {
    if (!this.#host) {
      this._checkLive('BlockMask.host', 'mask');
      const [fo, fi, po, pi, pb] = await Promise.all(this.#buffers!.map((t) => t.toArray() as Promise<Int32Array>));
      // Selection ops allocate index lists for the worst case; the offsets say how much is used.
      const rows = this.B * this.H * this.qBlocks;
      this.#host = {
        fullOffsets: fo!,
        fullIndices: fi!.slice(0, fo![rows]),
        partialOffsets: po!,
        partialIndices: pi!.slice(0, po![rows]),
        partialBits: new Uint32Array(pb!.buffer, 0, po![rows]! * this.blockQ * this.wordsPerRow).slice(),
      };
    }
    return this.#host;
  }

  #requireHost(op: string): BlockMaskData {
    if (!this.#host)
      throw new AttnkitError('ERR_ATTNKIT_UNSUPPORTED', op, `${op}: this mask was produced by enqueued work; call 'await mask.host()' first`);
    return this.#host;
  }

  /** Visibility as a dense matrix [B|1, H|1, Nq, Nk] (1 = visible). For inspection of small masks. */
  async toDense(): Promise<Uint8Array> {
    const d = await this.host();
    const { Nq, Nk, blockQ, blockK, qBlocks } = this;
    const out = new Uint8Array(this.B * this.H * Nq * Nk);
    const W = this.wordsPerRow;
    for (let bh = 0; bh < this.B * this.H; bh++)
      for (let qb = 0; qb < qBlocks; qb++) {
        const r = bh * qBlocks + qb;
        const q0 = qb * blockQ;
        const q1 = Math.min(Nq, q0 + blockQ);
        for (let i = d.fullOffsets[r]!; i < d.fullOffsets[r + 1]!; i++) {
          const k0 = d.fullIndices[i]! * blockK;
          const k1 = Math.min(Nk, k0 + blockK);
          for (let q = q0; q < q1; q++) out.fill(1, (bh * Nq + q) * Nk + k0, (bh * Nq + q) * Nk + k1);
        }
        for (let i = d.partialOffsets[r]!; i < d.partialOffsets[r + 1]!; i++) {
          const k0 = d.partialIndices[i]! * blockK;
          for (let q = q0; q < q1; q++)
            for (let j = 0; j < blockK && k0 + j < Nk; j++) {
              const w = d.partialBits[(i * blockQ + (q - q0)) * W + (j >> 5)]!;
              if ((w >>> (j & 31)) & 1) out[(bh * Nq + q) * Nk + k0 + j] = 1;
            }
        }
      }
    return out;
  }

  /** Fraction of visible (query, key) pairs, averaged over the mask's (b, h) entries. */
  async density(): Promise<number> {
    const dense = await this.toDense();
    let n = 0;
    for (const x of dense) n += x;
    return dense.length === 0 ? 0 : n / dense.length;
  }

  /** Fraction of (query block, key block) pairs listed (full or partial). */
  async blockDensity(): Promise<number> {
    const d = await this.host();
    const total = this.B * this.H * this.qBlocks * this.kBlocks;
    return total === 0 ? 0 : (d.fullIndices.length + d.partialIndices.length) / total;
  }

  /** Full and partial block counts. */
  async counts(): Promise<{ full: number; partial: number }> {
    const d = await this.host();
    return { full: d.fullIndices.length, partial: d.partialIndices.length };
  }

  /** Elements visible in both masks (same geometry; B/H of 1 broadcast). */
  and(other: BlockMask): BlockMask {
    return combine('BlockMask.and', this, other, (a, b) => a & b);
  }

  /** Elements visible in either mask (same geometry; B/H of 1 broadcast). */
  or(other: BlockMask): BlockMask {
    return combine('BlockMask.or', this, other, (a, b) => a | b);
  }

  /** @internal */
  _host(op: string): BlockMaskData {
    return this.#requireHost(op);
  }

  /**
   * Releases the buffers, the device plan and every copy made by `to` (idempotent). Work already
   * enqueued on them completes safely; ops given the mask afterwards throw ERR_ATTNKIT_DISPOSED. The
   * host lists of a mask built on the host stay readable (`toDense`, `density`, `and`, `or`).
   */
  dispose(): void {
    this.#buffers?.forEach((t) => t.dispose());
    this.#buffers = null;
    this.#plan?.tensor.dispose();
    this.#plan = null;
    this.#copies.forEach((m) => m.dispose());
    this.#copies.clear();
    this.#disposed = true;
  }
}

// Per-element combination of two masks, block by block (only blocks listed in either are visited).
function combine(op: string, ma: BlockMask, mb: unknown, f: (x: number, y: number) => number): BlockMask {
  if (!(mb instanceof BlockMask)) throw argError('ERR_ATTNKIT_ARGUMENT', op, 'other', 'to be a BlockMask', show(mb));
  if (ma.Nq !== mb.Nq || ma.Nk !== mb.Nk || ma.blockQ !== mb.blockQ || ma.blockK !== mb.blockK)
    throw argError('ERR_ATTNKIT_SHAPE', op, 'other', `to have the geometry of this mask (Nq ${ma.Nq}, Nk ${ma.Nk}, blocks ${ma.blockQ}x${ma.blockK})`, `Nq ${mb.Nq}, Nk ${mb.Nk}, blocks ${mb.blockQ}x${mb.blockK}`);
  for (const [name, x, y] of [['B', ma.B, mb.B], ['H', ma.H, mb.H]] as const)
    if (x !== y && x !== 1 && y !== 1) throw argError('ERR_ATTNKIT_SHAPE', op, 'other', `to have ${name} = ${x} or 1`, String(y));
  const da = ma._host(op);
  const db = mb._host(op);
  const B = Math.max(ma.B, mb.B);
  const H = Math.max(ma.H, mb.H);
  const out = new MaskBuilder(op, { B, H, Nq: ma.Nq, Nk: ma.Nk, blockQ: ma.blockQ, blockK: ma.blockK });
  const W = out.words;
  const zero = new Uint32Array(W);
  // Bitmap row qr of block kb in mask row r of m: a full row, the partial bitmap, or zeros.
  const source = (m: BlockMask, d: BlockMaskData, r: number, kb: number): ((qr: number) => Uint32Array) => {
    for (let i = d.fullOffsets[r]!; i < d.fullOffsets[r + 1]!; i++)
      if (d.fullIndices[i] === kb) {
        const full = fullRow(m.blockK, m.Nk, kb, W);
        return () => full;
      }
    for (let i = d.partialOffsets[r]!; i < d.partialOffsets[r + 1]!; i++)
      if (d.partialIndices[i] === kb) return (qr) => d.partialBits.subarray((i * m.blockQ + qr) * W, (i * m.blockQ + qr + 1) * W);
    return () => zero;
  };
  const listed = (d: BlockMaskData, r: number) => [
    ...d.fullIndices.subarray(d.fullOffsets[r]!, d.fullOffsets[r + 1]!),
    ...d.partialIndices.subarray(d.partialOffsets[r]!, d.partialOffsets[r + 1]!),
  ];
  const tmp = new Uint32Array(W);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let qb = 0; qb < out.qBlocks; qb++) {
        const ra = ((b % ma.B) * ma.H + (h % ma.H)) * ma.qBlocks + qb;
        const rb = ((b % mb.B) * mb.H + (h % mb.H)) * mb.qBlocks + qb;
        const rows = Math.min(ma.blockQ, ma.Nq - qb * ma.blockQ);
        const kbs = [...new Set([...listed(da, ra), ...listed(db, rb)])].sort((x, y) => x - y);
        for (const kb of kbs) {
          const sa = source(ma, da, ra, kb);
          const sb = source(mb, db, rb, kb);
          appendBlock(out, kb, rows, fullRow(ma.blockK, ma.Nk, kb, W), (qr) => {
            const x = sa(qr);
            const y = sb(qr);
            for (let w = 0; w < W; w++) tmp[w] = f(x[w]!, y[w]!) >>> 0;
            return tmp;
          });
        }
        out.endRow();
      }
  return BlockMask.fromBuilt(out.build());
}
