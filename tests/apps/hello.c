/* The C positive case, built by tests/run.rs both statically (no dynamic loader, no shared
   libraries) and dynamically (the host's ld.so and libc.so, mounted read-only in the jail). */
#include <stdio.h>

int main(void) {
    puts("hello from C");
    return 0;
}
