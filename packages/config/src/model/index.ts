export type * from './cluster.ts';
export type * from './listener.ts';
export type * from './node.ts';
export type * from './proxy-config.ts';
export type * from './route.ts';
export type * from './filters.ts';
