// The image-writing entry points shared by standby.prepare_image, standby.cache_image and the
// write_image deploy step: validation up front, progress reporting, and IPA's result text.
import type { ImageInfo } from '../../protocol/image-info.js';
import { ImageInfo as ImageInfoSchema } from '../../protocol/image-info.js';
import { schemaErrors } from '../../protocol/validate.js';
import { errors } from '../errors.js';
import type { CommandContext } from '../executor.js';
import type { Services } from '../services.js';
import { ImageProgress } from './progress.js';
import { validateChecksumFields } from './checksum.js';

/** 400 for bad image_info, as IPA's validator (runs before the command is accepted). */
export function checkImageInfo(info: unknown): ImageInfo {
  const problems = schemaErrors(ImageInfoSchema, info);
  if (problems.length) throw errors.invalidParams(`image_info: ${problems.join('; ')}`);
  validateChecksumFields(info as ImageInfo);
  return info as ImageInfo;
}

export async function runImageWrite(
  s: Services,
  ctx: CommandContext,
  req: { imageInfo: ImageInfo; configdrive: string | null; cacheOnly?: boolean; force?: boolean },
): Promise<string> {
  const progress = new ImageProgress();
  ctx.reportProgress(() => progress.snapshot());
  const timer = setInterval(() => ctx.log.info({ progress: progress.snapshot() }, 'image write progress'), 10_000);
  timer.unref();
  try {
    // The download/write stack (undici, decompressors, qcow2) loads on the first image, not at start-up.
    const { writeImage } = await import('./write-image.js');
    return (await writeImage(s, req, { log: ctx.log, progress })).message;
  } finally {
    clearInterval(timer);
  }
}
