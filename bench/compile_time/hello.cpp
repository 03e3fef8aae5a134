// The program bench/compile_time.sh compiles: a user program that includes spool.hpp.
#include "spool.hpp"
#include <iostream>
int main() {
    spool::Tensor x = spool::randn({2, 3}, {.requires_grad = true});
    spool::Tape tape;
    auto y = spool::sum(spool::tanh(x));
    tape.backward(y);
    std::cout << x.grad() << "\n";
}
