/*
 * hello: the smallest wasmbox example.
 *
 * Prints "Hello from wasmbox!" and, when extra arguments are given, a second
 * line "args: a b c" with argv[1..] joined by single spaces. Exits 0.
 */
#include <stdio.h>

int main(int argc, char **argv) {
    puts("Hello from wasmbox!");
    if (argc > 1) {
        fputs("args:", stdout);
        for (int i = 1; i < argc; i++) {
            putchar(' ');
            fputs(argv[i], stdout);
        }
        putchar('\n');
    }
    return 0;
}
