// The manifest's time arithmetic for replay: a mirror of recording/manifest.py (Segment.wall_ms,
// media_time, media_time_of_ts, end_ms; TrackEntry.segment_at; Manifest.end_ms, main_video).
// The timeline is arrival time in ms since the epoch (docs/recording.md, "The one clock");
// a segment's media time is what the <video> element reports (currentTime, mediaTime).

/**
 * @typedef {object} Segment
 * @property {string} file
 * @property {string} track_id
 * @property {string} codec
 * @property {number} clock_rate
 * @property {number | null} first_arrival_ms
 * @property {number | null} first_ts
 * @property {number | null} last_arrival_ms
 * @property {number | null} duration
 * @property {number[][]} sync_points  [[media s, arrival ms], ...]
 *
 * @typedef {object} Track
 * @property {string} key
 * @property {string} participant
 * @property {string} source
 * @property {"video" | "audio"} kind
 * @property {Segment[]} segments
 *
 * @typedef {object} Manifest
 * @property {string} id
 * @property {string} room
 * @property {number} started_ms
 * @property {number | null} stopped_ms
 * @property {Track[]} tracks
 */

/**
 * (media s, arrival ms) through which the mapping runs: media 0 at the first arrival, then
 * the sync points whose media time increases.
 * @param {Segment} seg
 * @returns {[number, number][]}
 */
function points(seg) {
  /** @type {[number, number][]} */
  const pts = [[0, Number(seg.first_arrival_ms)]];
  for (const [media, arrival] of seg.sync_points || []) {
    if (media > pts[pts.length - 1][0]) pts.push([Number(media), Number(arrival)]);
  }
  return pts;
}

/**
 * Index of the last value <= x in an ascending array (Python's bisect_right - 1; -1 if none).
 * @param {number[]} values  ascending
 * @param {number} x
 */
export function lastAtOrBefore(values, x) {
  let lo = 0;
  let hi = values.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (values[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo - 1;
}

/**
 * lastAtOrBefore, clamped to the array (as recording/manifest.py clamps its sync points).
 * @param {number[]} values  ascending
 * @param {number} x
 */
function floorIndex(values, x) {
  return Math.max(0, Math.min(lastAtOrBefore(values, x), values.length - 1));
}

/**
 * Timeline instant (ms since the epoch) of media time `mediaS` in the segment's file.
 * @param {Segment} seg
 * @param {number} mediaS
 */
export function wallMs(seg, mediaS) {
  const pts = points(seg);
  const i = floorIndex(pts.map((p) => p[0]), mediaS);
  const [m0, w0] = pts[i];
  if (i + 1 < pts.length) {
    const [m1, w1] = pts[i + 1];
    return w0 + ((mediaS - m0) * (w1 - w0)) / (m1 - m0);
  }
  return w0 + (mediaS - m0) * 1000;
}

/**
 * Inverse of wallMs: the file position (s) of a timeline instant.
 * @param {Segment} seg
 * @param {number} wall
 */
export function mediaTime(seg, wall) {
  const pts = points(seg);
  const i = floorIndex(pts.map((p) => p[1]), wall);
  const [m0, w0] = pts[i];
  if (i + 1 < pts.length) {
    const [m1, w1] = pts[i + 1];
    if (w1 > w0) return m0 + ((wall - w0) * (m1 - m0)) / (w1 - w0);
  }
  return m0 + (wall - w0) / 1000;
}

/**
 * File position (s) of the frame with source timestamp `ts` (null without first_ts).
 * @param {Segment} seg
 * @param {number} ts
 * @returns {number | null}
 */
export function mediaTimeOfTs(seg, ts) {
  if (seg.first_ts === null || seg.first_ts === undefined) return null;
  return (ts - seg.first_ts) / seg.clock_rate;
}

/**
 * Timeline end of a segment (null before its first packet).
 * @param {Segment} seg
 * @returns {number | null}
 */
export function segmentEnd(seg) {
  if (seg.first_arrival_ms === null || seg.first_arrival_ms === undefined) return null;
  if (seg.duration !== null && seg.duration !== undefined) return wallMs(seg, seg.duration);
  return Number(seg.last_arrival_ms || seg.first_arrival_ms);
}

/**
 * The segment of a track playing at a timeline instant (null in a gap).
 * @param {Track} track
 * @param {number} wall
 * @returns {Segment | null}
 */
export function segmentAt(track, wall) {
  for (const seg of track.segments) {
    const end = segmentEnd(seg);
    const start = seg.first_arrival_ms;
    if (start !== null && start !== undefined && end !== null && start <= wall && wall < end) return seg;
  }
  return null;
}

/**
 * The first segment of a track starting after `wall` (null if none).
 * @param {Track} track
 * @param {number} wall
 * @returns {Segment | null}
 */
export function segmentAfter(track, wall) {
  /** @type {Segment | null} */
  let best = null;
  for (const seg of track.segments) {
    const start = seg.first_arrival_ms;
    if (start === null || start === undefined || start <= wall) continue;
    if (!best || start < Number(best.first_arrival_ms)) best = seg;
  }
  return best;
}

/**
 * Timeline end of the recording: the stop, else the last media, else the start.
 * @param {Manifest} manifest
 */
export function manifestEnd(manifest) {
  if (manifest.stopped_ms !== null && manifest.stopped_ms !== undefined) return manifest.stopped_ms;
  const ends = manifest.tracks.flatMap((t) => t.segments.map(segmentEnd)).filter((e) => e !== null);
  return ends.length ? Math.floor(Math.max(.../** @type {number[]} */ (ends))) : manifest.started_ms;
}

/**
 * The laparoscope if recorded, else the first video track with media.
 * @param {Manifest} manifest
 * @returns {Track | null}
 */
export function mainVideo(manifest) {
  const videos = manifest.tracks.filter(
    (t) => t.kind === "video" && t.segments.some((s) => s.first_arrival_ms !== null && s.first_arrival_ms !== undefined),
  );
  return videos.find((t) => t.source === "laparoscope") || videos[0] || null;
}

/**
 * The segment of any track that holds the frame with source timestamp `ts` of track `trackId`:
 * the one with the greatest first_ts at or before it (each track counts from its first frame).
 * @param {Manifest} manifest
 * @param {string} trackId
 * @param {number} ts
 * @returns {Segment | null}
 */
export function segmentOfTs(manifest, trackId, ts) {
  /** @type {Segment | null} */
  let best = null;
  for (const track of manifest.tracks) {
    for (const seg of track.segments) {
      if (seg.track_id !== trackId || seg.first_ts === null || seg.first_ts === undefined) continue;
      if (seg.first_ts <= ts && (!best || seg.first_ts > Number(best.first_ts))) best = seg;
    }
  }
  return best;
}

/**
 * "m:ss" or "h:mm:ss" of a duration in ms.
 * @param {number} ms
 */
export function clockText(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}
