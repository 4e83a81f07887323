/* libpcaudio.so.0 without any audio device, for a GPU host that has no sound libraries.
 * espeak-ng links libpcaudio for playback; the benchmark only writes WAV files (espeak-ng -w), so
 * none of these is called there. Built by bench/gpu/prepare.sh, never installed with the app. */
#include <stddef.h>
struct audio_object;
struct audio_object *create_audio_device_object(const char *d, const char *a, const char *n) { return NULL; }
int audio_object_open(struct audio_object *o, int f, unsigned r, unsigned char c) { return -1; }
void audio_object_close(struct audio_object *o) {}
void audio_object_destroy(struct audio_object *o) {}
int audio_object_write(struct audio_object *o, const void *d, size_t b) { return -1; }
int audio_object_drain(struct audio_object *o) { return -1; }
int audio_object_flush(struct audio_object *o) { return -1; }
const char *audio_object_strerror(struct audio_object *o, int e) { return "no audio device"; }
