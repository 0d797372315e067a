# See CMakeLists.txt: quadra_cli_test(<name> <exit status> <regex> <args>...)
#
# Hostile and malformed input files: each gets one clear error (exit 1), never a hang, a crash,
# all-NaN outputs or unbounded memory.

# Only regular files are read: directories and devices are refused before they are read.
quadra_cli_test(config-directory 1 "config file \".*\": cannot be opened: it is a directory; expected a regular file"
                config --config ${CMAKE_CURRENT_SOURCE_DIR})
quadra_cli_test(config-dev-zero 1 "config file \"/dev/zero\": cannot be opened: it is a character device; expected a regular file"
                config --config /dev/zero)
quadra_cli_test(data-dev-zero 1 "quadra: error: cannot read /dev/zero: it is a character device; expected a regular file"
                data describe --data idx:/dev/zero,/dev/urandom)
quadra_cli_test(model-dev-zero 1 "quadra: error: cannot read /dev/zero: it is a character device; expected a regular file"
                spectrum --model /dev/zero --data moons)
quadra_cli_test(data-directory 1 "quadra: error: cannot read /: it is a directory; expected a regular file"
                data describe --data csv:/)

# The rest reads files that tests/fixtures/hostile/make_hostile.py writes at test time.
find_package(Python3 COMPONENTS Interpreter)
if(NOT Python3_Interpreter_FOUND)
  message(STATUS "python3 not found: the CLI tests on hostile input files are skipped")
  return()
endif()
set(hostile ${PROJECT_BINARY_DIR}/test-output/cli/hostile)
set(hostile_out ${PROJECT_BINARY_DIR}/test-output/cli/hostile-out)
add_test(NAME cli:hostile-files
         COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/tests/fixtures/hostile/make_hostile.py ${hostile})
set_tests_properties(cli:hostile-files PROPERTIES FIXTURES_SETUP cli-hostile)

# quadra_hostile_test(<name> <exit status> <regex> <args>...): a quadra_cli_test on those files.
# The timeout makes a read that blocks (a FIFO) fail quickly instead of hanging the suite.
function(quadra_hostile_test name status regex)
  quadra_cli_test(${name} ${status} "${regex}" ${ARGN})
  set_tests_properties(cli:${name} PROPERTIES FIXTURES_REQUIRED cli-hostile TIMEOUT 60)
endfunction()

set(linear --model "linear(2)" --out ${hostile_out})
quadra_hostile_test(config-fifo 1 "cannot be opened: it is a FIFO \\(named pipe\\); expected a regular file"
                    config --config ${hostile}/fifo)
quadra_hostile_test(data-fifo 1 "cannot read .*/fifo: it is a FIFO \\(named pipe\\); expected a regular file"
                    data describe --data csv:${hostile}/fifo)
quadra_hostile_test(curvature-inputs-fifo 1 "cannot read .*/fifo: it is a FIFO \\(named pipe\\); expected a regular file"
                    curvature ${linear} --inputs ${hostile}/fifo --targets ${hostile}/y.npy)
quadra_hostile_test(curvature-weights-dev-zero 1 "cannot read /dev/zero: it is a character device; expected a regular file"
                    curvature ${linear} --inputs ${hostile}/X.npy --targets ${hostile}/y.npy --weights /dev/zero)

# Non-finite numbers, and float64 values that float32 cannot hold.
quadra_hostile_test(curvature-inputs-nan 1 "X_nan\\.npy\": element 7 \\(index \\(2, 1\\)\\) is nan; expected finite numbers"
                    curvature ${linear} --inputs ${hostile}/X_nan.npy --targets ${hostile}/y.npy)
quadra_hostile_test(curvature-weights-nan 1 "w_nan\\.npz\": array '0\\.weight': element 1 \\(index \\(0, 1\\)\\) is nan; expected finite numbers"
                    curvature ${linear} --inputs ${hostile}/X.npy --targets ${hostile}/y.npy --weights ${hostile}/w_nan.npz)
quadra_hostile_test(curvature-vector-inf 1 "v_inf\\.npy\": element 5 is -inf; expected finite numbers"
                    curvature ${linear} --inputs ${hostile}/X.npy --targets ${hostile}/y.npy --vector ${hostile}/v_inf.npy)
quadra_hostile_test(curvature-inputs-float32-overflow 1 "X_big\\.npy\": element 4 \\(index \\(1, 1\\)\\) is 1e\\+300, which overflows float32"
                    curvature ${linear} --inputs ${hostile}/X_big.npy --targets ${hostile}/y.npy)
quadra_hostile_test(curvature-inputs-float64-holds-it 0 "^wrote loss\\.npy"
                    curvature ${linear} --inputs ${hostile}/X_big.npy --targets ${hostile}/y.npy --precision float64)
quadra_hostile_test(data-npy-nan 1 "X_nan\\.npy: element 7 \\(index \\(2, 1\\)\\) is nan; expected finite numbers"
                    data describe --data npy:${hostile}/X_nan.npy,${hostile}/y.npy)
quadra_hostile_test(data-csv-nan 1 "nan\\.csv: line 2, column 2 \\('b'\\): 'nan' is not finite; expected a finite number"
                    data describe --data csv:${hostile}/nan.csv)
quadra_hostile_test(data-csv-inf 1 "inf\\.csv: line 3, column 1 \\('a'\\): '-inf' is not finite; expected a finite number"
                    data describe --data csv:${hostile}/inf.csv)

# header=auto cannot take a data row with a stray text cell for a header.
quadra_hostile_test(data-csv-first-row 1 "first_row\\.csv: line 1, column 2: 'oops' is not a number; expected a number \\(header=auto takes the first line as a header only when none of its cells is a number"
                    data describe --data csv:${hostile}/first_row.csv)

# Declared sizes and class counts, under a memory limit: each file declares gigabytes (or a
# billion classes) and must be refused from its header. Not under the sanitizers, which reserve
# terabytes of address space.
if(NOT QUADRA_SANITIZE)
  set(memory_limit_kb 2097152)
  function(quadra_limited_test name status regex)
    add_test(NAME cli:${name}
             COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/expect.sh ${status} "${regex}" --
                     ${CMAKE_CURRENT_SOURCE_DIR}/with_memory_limit.sh ${memory_limit_kb} --
                     $<TARGET_FILE:quadra> ${ARGN})
    set_tests_properties(cli:${name} PROPERTIES ENVIRONMENT "QUADRA_PLUGIN_PATH="
                         FIXTURES_REQUIRED cli-hostile TIMEOUT 60)
  endfunction()
  quadra_limited_test(limited-weights-inflation-bomb 1 "w_bomb\\.npz\\[0\\.weight\\.npy\\]: the ZIP directory declares 3221225648 uncompressed bytes, but the \\.npy header says shape \\(2, 3\\) of float64, which needs 48 bytes of data after the 128-byte header"
                      curvature ${linear} --inputs ${hostile}/X.npy --targets ${hostile}/y.npy --weights ${hostile}/w_bomb.npz)
  quadra_limited_test(limited-idx-label-1e9 1 "labels_1e9\\.idx: label 2 \\(offset 16\\) is 1000000000; expected a class index below 100000 \\(labels must be class indices 0\\.\\.C-1 of at most 100000 classes\\)"
                      data describe --data idx:${hostile}/images.idx,${hostile}/labels_1e9.idx)
  quadra_limited_test(limited-idx-huge 1 "images_huge\\.idx: truncated IDX data: dimensions 60000 x 28 x 28 of ubyte need 47040000 bytes after the 16-byte header, but 10 bytes follow"
                      data describe --data idx:${hostile}/images_huge.idx,${hostile}/labels.idx)
  quadra_limited_test(limited-idx-huge-gzip 1 "images_huge\\.idx\\.gz: truncated IDX data: dimensions 1000000000 x 28 x 28 of ubyte need 784000000000 bytes after the 16-byte header, but 16 bytes follow"
                      data describe --data idx:${hostile}/images_huge.idx.gz,${hostile}/labels.idx)
  quadra_limited_test(limited-npy-label-1e9 1 "y_1e9\\.npy: label 2 is 1000000000; expected a class index below 100000 .*is this a regression target\\? use task=regression"
                      data describe --data npy:${hostile}/X.npy,${hostile}/y_1e9.npy)
  quadra_limited_test(limited-csv-label-1e9 1 "label_1e9\\.csv: line 3, column 3 \\('label'\\): label 1000000000 is not a class index below 100000"
                      data describe --data csv:${hostile}/label_1e9.csv)
  quadra_limited_test(limited-cifar10-truncated 1 "cifar10_truncated/data_batch_2\\.bin: 6145 bytes is not a whole, nonzero number of 3073-byte cifar10 records \\(1 records and 3072 bytes left over\\); expected a file of the CIFAR-10 binary version"
                      data describe --data cifar10:${hostile}/cifar10_truncated)
  quadra_limited_test(limited-cifar10-ok 0 "^train +8 +-?[0-9] &&& ^test +1 +-?[0-9] &&& normalisation: standardize-channel$ &&& ^7 +horse +1 +0 +1 "
                      data describe --data cifar10:${hostile}/cifar10 --normalize standardize-channel)
  # The limit leaves room for ordinary work: a well-formed file loads under it.
  quadra_limited_test(limited-idx-ok 0 "train +3 "
                      data describe --data idx:${hostile}/images.idx,${hostile}/labels.idx)
endif()
