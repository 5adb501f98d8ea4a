/**
 * IP text ↔ bytes without ipaddr.js's objects, for the decide path and the address lists: an
 * IPv6 sign-in took ~7.5 µs through ipaddr.js (parse, bytes, two RFC 5952 strings, the range
 * check) against ~0.6 µs for an IPv4 one. Both functions match ipaddr.js exactly on what they
 * accept (test/signals/ip-text.test.ts checks them against it); what they do not accept, the
 * callers hand to ipaddr.js.
 */

/** A hex group of one to four digits, or -1. */
function hexGroup(text: string, from: number, to: number): number {
  if (to <= from || to - from > 4) return -1;
  let value = 0;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    let digit: number;
    if (c >= 48 && c <= 57) digit = c - 48;
    else if (c >= 97 && c <= 102) digit = c - 87;
    else if (c >= 65 && c <= 70) digit = c - 55;
    else return -1;
    value = value * 16 + digit;
  }
  return value;
}

/** `a.b.c.d` with no leading zeros and every part ≤ 255, else undefined (the general path decides). */
export function dottedQuad(text: string): number[] | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  const octets: number[] = [];
  for (const part of parts) {
    if (part.length === 0 || part.length > 3 || (part.length > 1 && part.charCodeAt(0) === 48)) return undefined;
    let value = 0;
    for (let i = 0; i < part.length; i++) {
      const digit = part.charCodeAt(i) - 48;
      if (digit < 0 || digit > 9) return undefined;
      value = value * 10 + digit;
    }
    if (value > 255) return undefined;
    octets.push(value);
  }
  return octets;
}

/** Bytes 0-9 zero, 10-11 0xff: `::ffff:a.b.c.d`, the IPv4 client itself. */
export function ipv4Mapped(bytes: readonly number[]): boolean {
  if (bytes[10] !== 0xff || bytes[11] !== 0xff) return false;
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return true;
}

/**
 * The sixteen bytes of an IPv6 address in text: hex groups of one to four digits, at most one
 * `::`, optionally ending in a dotted IPv4. Undefined for anything else (a zone id, junk, a form
 * it does not know): the caller decides with ipaddr.js.
 */
export function ipv6Bytes(text: string): number[] | undefined {
  if (text.length < 2 || text.length > 45) return undefined;
  const groups: number[] = [];
  let gap = -1;
  let i = 0;
  if (text.charCodeAt(0) === 58) {
    // A leading colon only as the start of "::".
    if (text.charCodeAt(1) !== 58) return undefined;
    gap = 0;
    i = 2;
    if (i === text.length) return new Array<number>(16).fill(0);
  }
  while (i < text.length) {
    let end = i;
    while (end < text.length && text.charCodeAt(end) !== 58 && text.charCodeAt(end) !== 46) end++;
    if (end < text.length && text.charCodeAt(end) === 46) {
      // ipaddr.js reads exactly `::a.b.c.d` as IPv4-mapped (`::ffff:a.b.c.d`), not as the
      // IPv4-compatible address it spells: left to it, so the lists and clients read it as before.
      if (gap === 0 && groups.length === 0) return undefined;
      // The dotted IPv4 tail: the last 32 bits.
      const tail = dottedQuad(text.slice(i));
      if (!tail) return undefined;
      groups.push((tail[0]! << 8) | tail[1]!, (tail[2]! << 8) | tail[3]!);
      i = text.length;
      break;
    }
    const group = hexGroup(text, i, end);
    if (group < 0) return undefined;
    groups.push(group);
    if (end === text.length) {
      i = end;
      break;
    }
    // At a colon: "::" marks the gap (once), a single colon separates; neither may end the text
    // except "::" itself.
    if (end + 1 < text.length && text.charCodeAt(end + 1) === 58) {
      if (gap !== -1) return undefined;
      gap = groups.length;
      i = end + 2;
      if (i < text.length && text.charCodeAt(i) === 58) return undefined;
    } else {
      i = end + 1;
      if (i === text.length) return undefined;
    }
  }
  if (groups.length > 8) return undefined;
  if (gap === -1 ? groups.length !== 8 : groups.length > 7) return undefined;
  const full =
    gap === -1
      ? groups
      : [...groups.slice(0, gap), ...new Array<number>(8 - groups.length).fill(0), ...groups.slice(gap)];
  const bytes = new Array<number>(16);
  for (let g = 0; g < 8; g++) {
    bytes[2 * g] = full[g]! >> 8;
    bytes[2 * g + 1] = full[g]! & 0xff;
  }
  return bytes;
}

/**
 * RFC 5952 text of sixteen bytes, as ipaddr.js writes it: lowercase hex without leading zeros, the
 * longest run of two or more zero groups (the first of equal runs) as `::`.
 */
export function ipv6Text(bytes: readonly number[]): string {
  let bestStart = -1;
  let bestLength = 1;
  for (let g = 0; g < 8; ) {
    if (bytes[2 * g] !== 0 || bytes[2 * g + 1] !== 0) {
      g++;
      continue;
    }
    let end = g;
    while (end < 8 && bytes[2 * end] === 0 && bytes[2 * end + 1] === 0) end++;
    if (end - g > bestLength) {
      bestStart = g;
      bestLength = end - g;
    }
    g = end;
  }
  let text = '';
  for (let g = 0; g < 8; g++) {
    if (g === bestStart) {
      text += '::';
      g += bestLength - 1;
      continue;
    }
    if (text !== '' && !text.endsWith(':')) text += ':';
    text += ((bytes[2 * g]! << 8) | bytes[2 * g + 1]!).toString(16);
  }
  return text;
}
