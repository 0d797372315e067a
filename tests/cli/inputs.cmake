# See CMakeLists.txt: quadra_cli_test(<name> <exit status> <regex> <args>...)
