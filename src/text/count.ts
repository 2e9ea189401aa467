// Counts in words, for people: "1 event", "2 events", "0 principals".

/** `N noun` with the noun in the plural unless N is 1 (`plural` for nouns not made with "s"). */
export function count(n: number, noun: string, plural = `${noun}s`): string {
  return `${n} ${n === 1 ? noun : plural}`;
}
