/** Milliseconds spent reading and parsing the files, validating the resources, translating them (Istio → Envoy's resources → the runtime's model). */
export interface LoadTimings {
  readonly readMs: number;
  readonly validateMs: number;
  readonly translateMs: number;
}
