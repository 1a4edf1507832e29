// The secrets a config refers to, by kind: what the exporter writes as SDS names and the importers read back.
/** A secret a listener or cluster refers to by SDS name, and where its content comes from. */
export type SecretRef =
  | { readonly name: string; readonly kind: 'workload' }
  | { readonly name: string; readonly kind: 'roots' }
  | { readonly name: string; readonly kind: 'certificate'; readonly certFile: string; readonly keyFile: string }
  | { readonly name: string; readonly kind: 'validation'; readonly caFile: string };
