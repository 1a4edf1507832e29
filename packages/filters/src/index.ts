export * from './filter.ts';
export { FilterRegistry } from './registry.ts';
