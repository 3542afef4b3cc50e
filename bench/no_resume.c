// Preloaded into wrk (LD_PRELOAD) by bench/run so that every new connection makes a full TLS
// handshake even against a server that issues session tickets: wrk keeps the previous
// connection's session across SSL_clear() and offers it again, which turns its
// `Connection: close` runs into session resumptions. Before each handshake starts, this
// SSL_connect() drops that session and then calls OpenSSL's.
//
//   cc -shared -fPIC -O2 -o no_resume.so no_resume.c
//
// OpenSSL's types are opaque here, so no OpenSSL headers are needed to build it.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

int SSL_in_before(const SSL* s);
int SSL_set_session(SSL* s, SSL_SESSION* session);

typedef int (*connect_fn)(SSL*);

int SSL_connect(SSL* s) {
    static connect_fn real_connect = NULL;
    if (real_connect == NULL) {
        real_connect = (connect_fn)dlsym(RTLD_NEXT, "SSL_connect");
        if (real_connect == NULL) return -1;
    }
    // Only before the handshake has begun: wrk calls SSL_connect again while it is in progress.
    if (SSL_in_before(s)) SSL_set_session(s, NULL);
    return real_connect(s);
}
