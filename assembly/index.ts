// Entry point of the kernel module: every export here is a Wasm export.
export { gemm, gemmWorkspaceBytes } from "./gemm";
export * from "./gating";
export * from "./embedding";
export * from "./activation";
export * from "./loss";
export * from "./optim";
export * from "./norm";
