#include <cstdio>
int main() { std::puts("miproxy " MIPROXY_VERSION); return 0; }
