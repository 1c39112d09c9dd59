// Entry point of the kernel module: every export here is a Wasm export.
export {
  gemm,
  gemmPackB,
  gemmPacked,
  gemmPackedBBytes,
  gemmWideTiles,
  gemmWorkspaceBytes,
  setGemmWideTiles,
  setThreadSlot,
} from "./gemm";
export { peakProbe } from "./probe";
export { xxhash32 } from "./checksum";
export * from "./gating";
export * from "./embedding";
export * from "./activation";
export * from "./loss";
export * from "./optim";
export * from "./norm";
