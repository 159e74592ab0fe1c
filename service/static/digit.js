// A drawing as an MNIST digit: white ink on black, the ink's bounding box scaled to fit a 20x20 box
// (aspect ratio kept, area-averaged so that thin strokes turn grey rather than vanish), then placed in
// the 28x28 image so that its centre of mass lies at the image's centre, as LeCun et al. prepared MNIST.

export const SIZE = 28;
export const BOX = 20;

/** The smallest box holding every pixel with ink, or null for an empty drawing. */
export function inkBox(ink, width, height) {
  let left = width, top = height, right = -1, bottom = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (ink[y * width + x] > 0) {
        left = Math.min(left, x);
        right = Math.max(right, x);
        top = Math.min(top, y);
        bottom = Math.max(bottom, y);
      }
    }
  }
  return right < 0 ? null : { left, top, width: right - left + 1, height: bottom - top + 1 };
}

/** For each of `size` output cells covering source pixels [start, start + length): the first source
 * pixel it overlaps and the share of the cell each overlapped pixel covers (the shares sum to 1). */
function areaWeights(start, length, size) {
  const step = length / size;
  const cells = [];
  for (let i = 0; i < size; i++) {
    const from = start + i * step;
    const to = Math.min(from + step, start + length); // never past the box, whatever the rounding
    const first = Math.floor(from);
    const weights = [];
    for (let pixel = first; pixel < to; pixel++) {
      weights.push((Math.min(to, pixel + 1) - Math.max(from, pixel)) / step);
    }
    cells.push({ first, weights });
  }
  return cells;
}

/** The box of `ink` (a width-wide row-major array) resampled to w x h by area averaging. */
function resample(ink, width, box, w, h) {
  const columns = areaWeights(box.left, box.width, w);
  const rows = areaWeights(box.top, box.height, h);
  const out = new Float32Array(w * h);
  rows.forEach((row, y) => {
    columns.forEach((column, x) => {
      let sum = 0;
      row.weights.forEach((wy, dy) => {
        const offset = (row.first + dy) * width + column.first;
        column.weights.forEach((wx, dx) => {
          sum += wy * wx * ink[offset + dx];
        });
      });
      out[y * w + x] = sum;
    });
  });
  return out;
}

/** The centre of mass of a w x h image, in pixel units (pixel x spans [x, x + 1)). */
export function centreOfMass(pixels, w, h) {
  let mass = 0, cx = 0, cy = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const value = pixels[y * w + x];
      mass += value;
      cx += value * (x + 0.5);
      cy += value * (y + 0.5);
    }
  }
  return [cx / mass, cy / mass];
}

const clamp = (value, low, high) => Math.min(Math.max(value, low), high);

/**
 * The 28x28 MNIST input (uint8, row-major) of a drawing whose ink intensities in [0, 1] are `ink`
 * (width x height, row-major); null when nothing is drawn. The shift that centres the mass is rounded
 * to whole pixels and kept small enough for the whole digit to stay inside the image.
 */
export function mnistPixels(ink, width, height) {
  const box = inkBox(ink, width, height);
  if (box === null) return null;
  const scale = BOX / Math.max(box.width, box.height);
  const w = clamp(Math.round(box.width * scale), 1, BOX);
  const h = clamp(Math.round(box.height * scale), 1, BOX);
  const small = resample(ink, width, box, w, h);
  const [cx, cy] = centreOfMass(small, w, h);
  const left = clamp(Math.round(SIZE / 2 - cx), 0, SIZE - w);
  const top = clamp(Math.round(SIZE / 2 - cy), 0, SIZE - h);
  const pixels = new Uint8ClampedArray(SIZE * SIZE);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      pixels[(top + y) * SIZE + left + x] = Math.round(small[y * w + x] * 255);
    }
  }
  return pixels;
}
