/* The statically linked positive case: no dynamic loader, no shared libraries. */
#include <stdio.h>

int main(void) {
    puts("hello static");
    return 0;
}
