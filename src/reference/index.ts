/** Float64 references for every op: ground truth for tests, plain loops from the math in docs/. */
export * from './attention.js';
export * from './neighborhood.js';
export * from './linear.js';
export * from './block-sparse.js';
export * from './selection.js';
