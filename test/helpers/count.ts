/** How many items fall under each key (status codes, outcomes): one object, built without spreads. */
export function countBy<T, K extends PropertyKey>(items: Iterable<T>, keyOf: (item: T) => K): Record<K, number> {
  const counts = {} as Record<K, number>;
  for (const item of items) {
    const key = keyOf(item);
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}
