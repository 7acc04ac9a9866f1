/**
 * The lists a BlockMask holds (layout in src/masks/block-mask.ts) and the builder that appends them
 * row by row in canonical form: sorted key blocks, full blocks listed as full, partial bitmaps
 * neither empty nor full. The builders (src/masks/builders.ts) and BlockMask's set operations
 * produce masks through it; it knows nothing of the BlockMask class, which wraps what it builds.
 */
import { argError, checkInteger, MAX_EXTENT, show } from '../errors.js';

/** Host copy of a mask's lists (the layout: the module comment of src/masks/block-mask.ts). */
export interface BlockMaskData {
  fullOffsets: Int32Array;
  fullIndices: Int32Array;
  partialOffsets: Int32Array;
  partialIndices: Int32Array;
  partialBits: Uint32Array;
}

/** The extents of a mask: B|1, H|1, tokens and block sizes. */
export interface BlockMaskGeometry {
  /** Mask batch extent: 1 (shared) or the problem's B. */
  B: number;
  /** Mask head extent: 1 (shared) or the problem's query heads H. */
  H: number;
  Nq: number;
  Nk: number;
  blockQ: number;
  blockK: number;
}

/** Block sizes of a mask: powers of two in 16..128, default 64. */
export interface BlockSizes {
  /** Query block size. */
  blockQ?: number;
  /** Key block size. */
  blockK?: number;
}

const isBlock = (x: unknown) => typeof x === 'number' && [16, 32, 64, 128].includes(x);

export function checkGeometry(op: string, g: BlockMaskGeometry): void {
  if (g === null || typeof g !== 'object') throw argError('ERR_ATTNKIT_ARGUMENT', op, 'geometry', 'to be an object {B, H, Nq, Nk, blockQ, blockK}', show(g));
  for (const name of ['B', 'H'] as const) checkInteger(op, name, g[name], { min: 1, code: 'ERR_ATTNKIT_SHAPE' });
  for (const name of ['Nq', 'Nk'] as const) checkInteger(op, name, g[name], { min: 0, code: 'ERR_ATTNKIT_SHAPE' });
  for (const [name, v] of [['blockQ', g.blockQ], ['blockK', g.blockK]] as const)
    if (!isBlock(v)) throw argError('ERR_ATTNKIT_ARGUMENT', op, name, 'to be a power of two between 16 and 128', show(v));
  if (g.B * g.H * Math.ceil(g.Nq / g.blockQ) > MAX_EXTENT)
    throw argError('ERR_ATTNKIT_SHAPE', op, 'B', "times 'H' times ceil(Nq / blockQ) (the mask's rows) to be < 2^31", String(g.B * g.H * Math.ceil(g.Nq / g.blockQ)));
}

/** What a builder produces: the geometry and the host lists. */
export interface BuiltMask {
  geometry: BlockMaskGeometry;
  data: BlockMaskData;
}

/** Builds a mask's lists one (b, h, query block) row at a time, key blocks in increasing order. */
export class MaskBuilder {
  readonly g: BlockMaskGeometry;
  readonly qBlocks: number;
  readonly kBlocks: number;
  readonly words: number;
  #fullOff: number[] = [0];
  #fullIdx: Int32Array = new Int32Array(1024);
  #nFull = 0;
  #partOff: number[] = [0];
  #partIdx: Int32Array = new Int32Array(256);
  #nPart = 0;
  #bits: Uint32Array;

  constructor(op: string, g: BlockMaskGeometry) {
    checkGeometry(op, g);
    this.g = g;
    this.qBlocks = Math.ceil(g.Nq / g.blockQ);
    this.kBlocks = Math.ceil(g.Nk / g.blockK);
    this.words = Math.ceil(g.blockK / 32);
    this.#bits = new Uint32Array(256 * g.blockQ * this.words);
  }

  /** Appends a full block to the current row (key blocks in increasing order). */
  full(kb: number): void {
    if (this.#nFull === this.#fullIdx.length) {
      const n = new Int32Array(this.#fullIdx.length * 2);
      n.set(this.#fullIdx);
      this.#fullIdx = n;
    }
    this.#fullIdx[this.#nFull++] = kb;
  }

  /** Appends a partial block; returns its bitmap (blockQ rows x words) to fill in. */
  partial(kb: number): Uint32Array {
    if (this.#nPart === this.#partIdx.length) {
      const n = new Int32Array(this.#partIdx.length * 2);
      n.set(this.#partIdx);
      this.#partIdx = n;
      const b = new Uint32Array(this.#bits.length * 2);
      b.set(this.#bits);
      this.#bits = b;
    }
    this.#partIdx[this.#nPart] = kb;
    const per = this.g.blockQ * this.words;
    const view = this.#bits.subarray(this.#nPart * per, (this.#nPart + 1) * per);
    view.fill(0);
    this.#nPart++;
    return view;
  }

  /** Drops the last partial block (when its bitmap turned out empty). */
  dropPartial(): void {
    this.#nPart--;
  }

  /** Ends the current (b, h, query block) row. */
  endRow(): void {
    this.#fullOff.push(this.#nFull);
    this.#partOff.push(this.#nPart);
  }

  /** The finished lists, with their geometry (BlockMask wraps them). */
  build(): BuiltMask {
    const per = this.g.blockQ * this.words;
    return {
      geometry: this.g,
      data: {
        fullOffsets: Int32Array.from(this.#fullOff),
        fullIndices: this.#fullIdx.slice(0, this.#nFull),
        partialOffsets: Int32Array.from(this.#partOff),
        partialIndices: this.#partIdx.slice(0, this.#nPart),
        partialBits: this.#bits.slice(0, this.#nPart * per),
      },
    };
  }
}

/** Bitmap words of one block row: all in-range columns of key block kb visible. */
export function fullRow(blockK: number, Nk: number, kb: number, words: number): Uint32Array {
  const row = new Uint32Array(words);
  const cols = Math.min(blockK, Nk - kb * blockK);
  for (let j = 0; j < cols; j++) row[j >> 5]! |= 1 << (j & 31);
  return row;
}

/**
 * Appends key block kb to the builder's current row from its per-row bitmaps (`rows` in-range query
 * rows): as full when every row equals `full`, skipped when all are empty, else as partial.
 */
export function appendBlock(out: MaskBuilder, kb: number, rows: number, full: Uint32Array, rowBits: (r: number) => Uint32Array): void {
  let allFull = true;
  let any = false;
  for (let r = 0; r < rows; r++) {
    const x = rowBits(r);
    for (let w = 0; w < full.length; w++) {
      if (x[w] !== full[w]) allFull = false;
      if (x[w] !== 0) any = true;
    }
  }
  if (!any) return;
  if (allFull) {
    out.full(kb);
    return;
  }
  const bits = out.partial(kb);
  for (let r = 0; r < rows; r++) bits.set(rowBits(r), r * full.length);
}
