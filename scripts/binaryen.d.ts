// The part of binaryen's API that scripts/gemm_tiles.ts uses. Declared here
// because checking binaryen's own index.d.ts pulls in @types/node, which
// `deno check` cannot resolve (64 warnings).
declare namespace binaryen {
  /** Feature flags (binaryen's `Features`). */
  const Features: {
    MVP: number;
    SIMD128: number;
    RelaxedSIMD: number;
    Atomics: number;
  };
  /** A parsed module. */
  interface Module {
    setFeatures(features: number): void;
    validate(): number;
    emitBinary(): Uint8Array;
    dispose(): void;
  }
  /** Parses WebAssembly text into a module. */
  function parseText(text: string): Module;
}
export default binaryen;
