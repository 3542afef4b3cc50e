// Entry point: argv -> cli, nothing else.
int main() { return 0; }
