/**
 * Parsing JSON from strangers strictly, as the Python client does.
 *
 * `JSON.parse` keeps the last of two equal keys, so two readers of the same
 * signed bytes could disagree about what was said (the CLI refuses such a
 * plaintext, the browser would show the second value). This reader refuses
 * repeated keys, lone UTF-16 surrogates (not encodable as UTF-8) and deep
 * nesting, and otherwise gives what `JSON.parse` gives.
 */
export class StrictJsonError extends Error {}

export const MAX_DEPTH = 64;

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Walk the text once, finding every object's keys as written (escapes decoded). */
function scan(text: string): void {
  let i = 0;
  const stack: (Set<string> | null)[] = [];
  // when the next string inside an object is a key
  let expectKey = false;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      const value = JSON.parse(text.slice(i, j + 1)) as string;
      if (LONE_SURROGATE.test(value)) throw new StrictJsonError('lone surrogate in a string');
      const top = stack[stack.length - 1];
      if (expectKey && top) {
        if (top.has(value)) throw new StrictJsonError(`duplicate key ${JSON.stringify(value)}`);
        top.add(value);
        expectKey = false;
      }
      i = j + 1;
      continue;
    }
    if (c === '{' || c === '[') {
      stack.push(c === '{' ? new Set() : null);
      if (stack.length > MAX_DEPTH) throw new StrictJsonError('nested too deeply');
      expectKey = c === '{';
    } else if (c === '}' || c === ']') {
      stack.pop();
      expectKey = false;
    } else if (c === ',') {
      expectKey = stack[stack.length - 1] instanceof Set;
    }
    i += 1;
  }
}

/** Parse JSON text strictly; throws StrictJsonError (or SyntaxError for text that is not JSON). */
export function strictParse(text: string): unknown {
  const value: unknown = JSON.parse(text);
  // valid JSON from here on: the scan can rely on balanced brackets and closed strings
  scan(text);
  return value;
}
