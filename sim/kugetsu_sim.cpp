#include <kugetsu/sim/explore.hpp>
int main() { return 0; }
