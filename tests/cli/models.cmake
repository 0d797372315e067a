# See CMakeLists.txt: quadra_cli_test(<name> <exit status> <regex> <args>...)

# Model sizes. A model is sized from its spec and input shape before anything is allocated and
# refused above the memory limit: QUADRA_MEMORY_LIMIT, or else the smaller of physical memory
# and the address-space limit (ulimit -v). Every test here clears QUADRA_MEMORY_LIMIT or sets it,
# so a developer's own setting does not change the outcome.
set(cli_fixtures ${PROJECT_SOURCE_DIR}/tests/fixtures/cli)
set(x784 --inputs ${cli_fixtures}/x784.npy --targets ${cli_fixtures}/y2.npy)  # 2 samples, 784 features

# quadra_cli_test_env(<name> <VAR=value> <exit status> <regex> <args>...)
function(quadra_cli_test_env name env status regex)
  add_test(NAME cli:${name}
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/expect.sh ${status} "${regex}" -- $<TARGET_FILE:quadra> ${ARGN})
  set_tests_properties(cli:${name} PROPERTIES ENVIRONMENT "QUADRA_PLUGIN_PATH=;${env}")
endfunction()

# quadra_cli_test_limited(<name> <KiB> <exit status> <regex> <args>...): under ulimit -v KiB.
function(quadra_cli_test_limited name kib status regex)
  add_test(NAME cli:${name}
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/expect.sh ${status} "${regex}" --
                   ${CMAKE_CURRENT_SOURCE_DIR}/with_memory_limit.sh ${kib} -- $<TARGET_FILE:quadra> ${ARGN})
  set_tests_properties(cli:${name} PROPERTIES ENVIRONMENT "QUADRA_PLUGIN_PATH=;QUADRA_MEMORY_LIMIT=")
endfunction()

# Under a 2000000 KiB address space (2048000000 bytes): terabyte models are refused with the
# bytes they need, a model that fits runs. ASan reserves terabytes of address space up front, so
# the sanitizer build cannot run under ulimit -v.
if(NOT QUADRA_SANITIZE)
  set(rlimit_message "the memory limit \\(the process's address-space limit, RLIMIT_AS\\) is 1\\.9 GiB \\(2048000000 bytes\\); raise that limit \\(ulimit -v\\) or set QUADRA_MEMORY_LIMIT to override it")
  quadra_cli_test_limited(memory-limit-huge-linear 2000000 1
                          "^quadra: error: model 'linear\\(1000000000\\)' on input 784 needs 2\\.9 TiB \\(3144000003136 bytes\\) for its 785000000000 parameters and the activations of one sample \\(1000000784 values\\), in float32; ${rlimit_message}$"
                          curvature --model "linear(1000000000)" --input-shape 784 ${x784} --out ${runs}/memory-limit-huge-linear)
  # Parameters are small here (200000010); one sample's activations (7.8e9 values) are not.
  quadra_cli_test_limited(memory-limit-huge-conv 2000000 1
                          "^quadra: error: model 'conv\\(10000000,3,stride=1,pad=1\\) avgpool\\(28,stride=28,pad=0\\) flatten linear\\(10\\)' on input 1x28x28 needs 30\\.0 GiB \\(32240003216 bytes\\) for its 200000010 parameters and the activations of one sample \\(7860000794 values\\), in float32; ${rlimit_message}$"
                          curvature --model "conv(10000000,3,pad=1) avgpool(28) flatten linear(10)" --input-shape 1x28x28
                          ${x784} --out ${runs}/memory-limit-huge-conv)
  # 1.26 GB in float32 fits; the same parameters in float64 (2.5 GB) do not.
  quadra_cli_test_limited(memory-limit-float64 2000000 1
                          "^quadra: error: model 'linear\\(400000\\)' on input 784 needs 2\\.3 GiB \\(2515206272 bytes\\) for its 314000000 parameters and the activations of one sample \\(400784 values\\), in float64; ${rlimit_message}$"
                          curvature --model "linear(400000)" ${x784} --precision float64 --out ${runs}/memory-limit-float64)
  quadra_cli_test_limited(memory-limit-train 2000000 1
                          "^quadra: error: .*model 'linear\\(1000000000\\) tanh linear\\(2\\)' on input 2 needs 26\\.1 GiB \\([0-9]+ bytes\\) for its 5000000002 parameters .*RLIMIT_AS"
                          train ${moons} --set "model.spec=linear(1000000000) tanh linear(2)" --set optimizer.solver=sgd
                          --set train.max_steps=1 --set train.out=${runs}/memory-limit-train)
  quadra_cli_test_limited(memory-limit-fits 2000000 0 "^wrote loss\\.npy, per_sample_loss\\.npy, grad\\.npy"
                          curvature --model "linear(16) tanh linear(2)" ${x784} --out ${runs}/memory-limit-fits)
endif()

# QUADRA_MEMORY_LIMIT sets the limit (runs under every build).
quadra_cli_test_env(memory-limit-variable "QUADRA_MEMORY_LIMIT=1M" 1
                    "^quadra: error: model 'linear\\(1000\\)' on input 784 needs 3\\.0 MiB \\(3147136 bytes\\) for its 785000 parameters and the activations of one sample \\(1784 values\\), in float32; the memory limit \\(QUADRA_MEMORY_LIMIT\\) is 1\\.0 MiB \\(1048576 bytes\\); raise QUADRA_MEMORY_LIMIT to allow it$"
                    curvature --model "linear(1000)" ${x784} --out ${runs}/memory-limit-variable)
quadra_cli_test_env(memory-limit-variable-fits "QUADRA_MEMORY_LIMIT=64M" 0 "^wrote loss\\.npy"
                    curvature --model "linear(1000)" ${x784} --out ${runs}/memory-limit-variable-fits)
quadra_cli_test_env(memory-limit-malformed "QUADRA_MEMORY_LIMIT=1.5G" 1
                    "^quadra: error: QUADRA_MEMORY_LIMIT='1\\.5G' is not a memory size; expected a whole number of bytes >= 1 with an optional K, M, G or T suffix \\(powers of 1024\\), e.g\\. 16G$"
                    curvature --model "linear(10)" ${x784} --out ${runs}/memory-limit-malformed)
# The model fits (472 bytes for one sample); a training batch of 50 samples does not.
quadra_cli_test_env(memory-limit-batch "QUADRA_MEMORY_LIMIT=1K" 1
                    "model 'linear\\(16\\) tanh linear\\(2\\)' on input 2 needs [0-9.]+ KiB \\([0-9]+ bytes\\) for its 82 parameters and the activations of [0-9]+ samples \\([0-9]+ x 36 values\\), in float32; the memory limit \\(QUADRA_MEMORY_LIMIT\\) is 1\\.0 KiB \\(1024 bytes\\); raise QUADRA_MEMORY_LIMIT to allow it, or use a smaller batch"
                    train ${moons} --set optimizer.solver=sgd --set train.max_steps=1 --set train.out=${runs}/memory-limit-batch
                    --overwrite)

# Layer specs: each argument's message says what it allows.
quadra_cli_test(spec-negative-pad 1
                "^quadra: error: layer spec: token 1 'conv\\(16,3,pad=-1\\)' at character 1: pad '-1' is not an integer >= 0; expected conv\\(OUT,KERNEL\\[,stride=S\\]\\[,pad=P\\]\\[,bias=true\\|false\\]\\)$"
                curvature --model "conv(16,3,pad=-1) flatten linear(2)" --input-shape 1x28x28 ${x784} --out ${runs}/spec-negative-pad)
quadra_cli_test(spec-zero-stride 1 "token 2 'maxpool\\(2,stride=0\\)' at character 18: stride '0' is not an integer >= 1"
                curvature --model "conv(16,3,pad=1) maxpool(2,stride=0) flatten linear(2)" --input-shape 1x28x28 ${x784}
                --out ${runs}/spec-zero-stride)
# A spec longer than a file name (255 characters) is still a spec.
string(REPEAT "linear(16) tanh " 20 long_spec)
string(APPEND long_spec "linear(2)")
quadra_cli_test(train-long-spec 0 "^budget of 1 steps reached"
                train ${moons} --set "model.spec=${long_spec}" --set optimizer.solver=sgd --set train.max_steps=1
                --set train.out=${runs}/train-long-spec --overwrite)
quadra_cli_test(curvature-long-spec 0 "^wrote loss\\.npy"
                curvature --model "${long_spec}" ${x784} --out ${runs}/curvature-long-spec)

# quadra compare: every seed of compare.seeds is one run per optimizer, in its own directory.
set(compare_moons compare --config ${configs}/moons-compare.ini)
quadra_cli_test(compare-empty-seeds 1
                "^quadra: error: config key compare\\.seeds is empty; expected integers >= 0 separated by commas or spaces, e\\.g\\. 'seeds = 0 1 2'$"
                ${compare_moons} --set compare.seeds= --set compare.out=${runs}/compare-empty-seeds)
quadra_cli_test(compare-duplicate-seeds 1 "^quadra: error: config key compare\\.seeds lists seed 1 twice; expected each seed once$"
                ${compare_moons} --set compare.seeds=0,1,2,01 --set compare.out=${runs}/compare-duplicate-seeds)
quadra_cli_test(compare-negative-seed 1 "^quadra: error: config key compare\\.seeds: '-1' is not a seed; expected integers >= 0"
                ${compare_moons} --set "compare.seeds=0 -1" --set compare.out=${runs}/compare-negative-seed)
quadra_cli_test(compare-huge-seed 1 "config key compare\\.seeds: '18446744073709551616' is more than 18446744073709551615; expected"
                ${compare_moons} --set compare.seeds=18446744073709551616 --set compare.out=${runs}/compare-huge-seed)

# quadra model describe: layers with output shapes, parameters and FLOPs; parameter names,
# shapes and offsets; a spec needs its input shape, a model file carries it.
set(small_cnn "conv(16,3,pad=1) relu maxpool(2) conv(32,3) relu maxpool(2) flatten linear(10)")
quadra_cli_test(model-describe 0 "^# model 'conv\\(16,3,stride=1,pad=1\\) relu .* linear\\(10\\)' on input 1x28x28: 16,330 parameters &&& ^0 +conv\\(16,3,stride=1,pad=1\\) +16x28x28 +160 +238,336$ &&& ^6 +flatten +1152 +0$ &&& ^total +16,330 +1,627,402$ &&& ^3\\.weight +\\(32, 16, 3, 3\\) +160 +4608$ &&& ^7\\.bias +\\(10,\\) +16320 +10$"
                model describe --model ${small_cnn} --input-shape 1x28x28)
quadra_cli_test(model-describe-needs-shape 2 "quadra model: --model 'linear\\(5\\)' is a layer spec: give its --input-shape"
                model describe --model "linear(5)")
quadra_cli_test(model-describe-unknown-action 2 "quadra model: unknown action 'explain'; expected describe"
                model explain --model "linear(5)")
# A file that embeds a model (here the posterior file of laplace.cmake) carries its input shape.
quadra_cli_test(model-describe-file 0 "^# model 'linear\\(8\\) tanh linear\\(2\\)' on input 2: 42 parameters"
                model describe --model ${runs}/posteriors/fixture/posterior.npz)
set_tests_properties(cli:model-describe-file PROPERTIES FIXTURES_REQUIRED cli-posterior)

# Normalization layers from the command line: exact curvature quantities, training with the
# K-FAC solver (diagonal blocks for their weights and biases), and buffers in model describe.
set(norm_spec "linear(16) batchnorm tanh layernorm linear(8) groupnorm(4) linear(2)")
quadra_cli_test(curvature-norm-layers 0 "^wrote loss\\.npy"
                curvature --model "${norm_spec}" --input-shape 784 ${x784} --diagonals --precision float64
                --out ${runs}/curvature-norm-layers)
quadra_cli_test(train-norm-layers-kfac 0 "^budget of 6 steps reached: 6 steps"
                train ${moons} --set "model.spec=${norm_spec}" --set optimizer.solver=kfac
                --set optimizer.curvature=ggn --set train.max_steps=6
                --set train.out=${runs}/train-norm-layers-kfac --overwrite)
quadra_cli_test(train-norm-layers-kfac-curvature 0 "^budget of 4 steps reached: 4 steps"
                train ${moons} --set "model.spec=${norm_spec}" --set optimizer.solver=cg
                --set optimizer.curvature=kfac --set train.max_steps=4
                --set train.out=${runs}/train-norm-layers-kfac-curvature --overwrite)
quadra_cli_test(model-describe-buffers 0 "parameters, 3 buffers$ &&& ^1 +batchnorm +16 +32 +32$ &&& ^1\\.weight +\\(16,\\) &&& ^# buffers &&& ^1\\.running_mean +\\(16,\\) +16$ &&& ^1\\.num_batches_tracked +\\(\\) +1$"
                model describe --model "${norm_spec}" --input-shape 2)
