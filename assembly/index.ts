// Entry point of the kernel module: every export here is a Wasm export.
export { gemm, gemmWorkspaceBytes } from "./gemm";
