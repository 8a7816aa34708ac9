/**
 * Writes interop/web-vectors.json from the TypeScript crypto modules
 * (`npm run vectors`). The Python tests check every vector in it.
 */
import { writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildVectors, render } from '../src/lib/crypto/vectors';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(here, '../../interop/web-vectors.json');
writeFileSync(out, render(buildVectors()));
console.log(`wrote ${out}`);
