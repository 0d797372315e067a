# Plugins that break the SDK's rules at run time (tests/plugins/fixtures/misbehaving.cpp), and
# the life of a run directory. See CMakeLists.txt for quadra_cli_test().
set(misbehaving --plugin-path ${fixture_root}/misbehaving --set train.max_steps=3
                --set train.max_failures=2)
set(plugin_file "\\(\"[^\"]*libfixture_misbehaving[^\"]*\"\\)")
quadra_cli_test(plugin-throws 1
                "^quadra: error: solver plugin 'misbehaving' ${plugin_file} threw from propose\\(\\): deliberate failure in propose$"
                train ${moons} ${misbehaving} --set optimizer.solver=misbehaving
                --set solver.fault=propose-throws --set train.out=${runs}/plugin-throws --overwrite)
quadra_cli_test(plugin-throws-int 1
                "^quadra: error: damping plugin 'misbehaving' ${plugin_file} threw from step_measured\\(\\) an exception of type 'int', which is not a std::exception"
                train ${moons} ${misbehaving} --set optimizer.solver=sgd --set optimizer.curvature=ggn
                --set optimizer.damping=misbehaving --set damping.fault=step_measured-throws-int
                --set train.out=${runs}/plugin-throws-int --overwrite)
quadra_cli_test(plugin-curvature-throws 1
                "^quadra: error: curvature plugin 'misbehaving' ${plugin_file} threw from apply\\(\\): deliberate failure in apply$"
                train ${moons} ${misbehaving} --set optimizer.solver=cg --set optimizer.curvature=misbehaving
                --set curvature.fault=apply-throws --set train.out=${runs}/plugin-curvature-throws --overwrite)
quadra_cli_test(plugin-invalid-plan 1
                "^quadra: error: debiasing plugin 'misbehaving' ${plugin_file}: plan\\(\\) returned an invalid plan: role 'directions' maps to draw 3, but the plan has 1 draw$"
                train ${moons} ${misbehaving} --set optimizer.solver=sgd --set optimizer.debiasing=misbehaving
                --set debiasing.fault=plan-invalid --set train.out=${runs}/plugin-invalid-plan --overwrite)
quadra_cli_test(plugin-nan-lambda 1
                "^2 consecutive steps were rejected \\(train.max_failures\\); the last one: damping plugin 'misbehaving' ${plugin_file} returned lambda\\(\\) = nan; expected a finite number >= 0"
                train ${moons} ${misbehaving} --set optimizer.solver=sgd --set optimizer.curvature=ggn
                --set optimizer.damping=misbehaving --set damping.fault=lambda-nan
                --set train.out=${runs}/plugin-nan-lambda --overwrite)
quadra_cli_test(plugin-nan-product 1
                "the last one: solver: curvature plugin 'misbehaving' ${plugin_file}: apply\\(\\) returned a non-finite product \\(entry 0 is nan\\)"
                train ${moons} ${misbehaving} --set optimizer.solver=cg --set optimizer.curvature=misbehaving
                --set curvature.fault=apply-nan --set train.out=${runs}/plugin-nan-product --overwrite)
quadra_cli_test(plugin-nan-coefficients 1
                "the last one: debiasing: debiasing plugin 'misbehaving' ${plugin_file}: coefficients\\(\\) returned a non-finite coefficient \\(entry 0 is nan\\)"
                train ${moons} ${misbehaving} --set optimizer.solver=sgd --set optimizer.debiasing=misbehaving
                --set debiasing.fault=coefficients-nan --set train.out=${runs}/plugin-nan-coefficients --overwrite)
quadra_cli_test(plugin-throws-in-spectrum 1
                "curvature plugin 'misbehaving' ${plugin_file} threw from apply\\(\\): deliberate failure in apply"
                spectrum --model "linear(8) tanh linear(2)" --data moons:n=600,test=200,seed=3 --batch-size 32
                --top 2 --plugin-path ${fixture_root}/misbehaving --curvature misbehaving
                --set curvature.fault=apply-throws)
# An empty file with a library's name: the loader's own reason, not "Bad file descriptor".
set(empty_library ${fixture_root}/empty/libfixture_empty${CMAKE_SHARED_MODULE_SUFFIX})
file(WRITE ${empty_library} "")
quadra_cli_test(plugin-empty-file 1 "refused plugin .*libfixture_empty.so\": not a loadable shared library \\(the file is empty\\)"
                plugins --plugin-path ${fixture_root}/empty)
quadra_cli_test(plugin-not-elf-reason 1 "refused plugin .*libfixture_not_a_library.so\": not a loadable shared library \\(.*(invalid ELF header|file too short)"
                plugins --plugin-path ${fixture_root}/not_a_library)

add_test(NAME cli:run-directory
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/run_directory.sh $<TARGET_FILE:quadra> ${runs}/run-directory
                 ${configs}/moons-compare.ini -- ${moons} --set optimizer.solver=sgd)
set_tests_properties(cli:run-directory PROPERTIES ENVIRONMENT "QUADRA_PLUGIN_PATH=")

# Model files carry their preprocessing, end to end; with Debian's python3-torch, the PyTorch
# loader of examples/pytorch reproduces quadra's test accuracy.
execute_process(COMMAND /usr/bin/python3 -c "import torch, numpy" RESULT_VARIABLE no_torch
                OUTPUT_QUIET ERROR_QUIET)
set(torch_python "")
if(no_torch EQUAL 0)
  set(torch_python /usr/bin/python3)
else()
  message(STATUS "python3-torch not found: the PyTorch loader test is left out (scripts/setup.sh installs it)")
endif()
add_test(NAME cli:model-preprocessing
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/model_preprocessing.sh $<TARGET_FILE:quadra>
                 ${runs}/model-preprocessing ${PROJECT_SOURCE_DIR}/tests/fixtures/cli/x784.npy
                 ${PROJECT_SOURCE_DIR}/tests/fixtures/cli/y2.npy ${torch_python})
set_tests_properties(cli:model-preprocessing PROPERTIES ENVIRONMENT "QUADRA_PLUGIN_PATH=")

# quadra bias --newton-step measures preconditioned CG as the cg solver runs it.
quadra_cli_test(bias-newton-preconditioned 0 "^0\\.01 +cg-line-search +[0-9]+"
                bias --newton-step --model "linear(8) tanh linear(2)" --data moons:n=600,test=200,seed=3
                --precision float64 --batch-size 32 --repeats 3 --lambdas 0.01 --cg-iterations 6
                --eval-every 2 --cg-preconditioner diag-ef)
quadra_cli_test(bias-newton-bad-preconditioner 2 "--cg-preconditioner 'ggn': expected none, diag-ggn, diag-ef or kfac"
                bias --newton-step --model "linear(8) tanh linear(2)" --data moons:n=600,test=200,seed=3
                --batch-size 32 --cg-preconditioner ggn)

# quadra compare's time to a target accuracy: a column, summary.csv fields, a refused value.
quadra_cli_test(compare-target 0
                "to target s$ &&& ^moons-sgd +2 .* [0-9.e+-]+( ± [0-9.e+-]+)?( \\(1/2\\))?$ &&& ^to target: training time \\(evaluations excluded\\) until the first evaluation with 80% test accuracy"
                compare --config ${configs}/moons-compare.ini --set compare.out=${runs}/compare-target
                --set compare.target_accuracy=80 --overwrite)
quadra_cli_test(compare-target-bad 1 "config key compare.target_accuracy: '101' is not a test accuracy in percent; expected a number in \\(0, 100\\]"
                compare --config ${configs}/moons-compare.ini --set compare.out=${runs}/compare-target-bad
                --set compare.target_accuracy=101)

# Training augmentation: a bad value and flat data are refused before the run starts.
quadra_cli_test(train-augment-flat 1 "^quadra: error: augment = crop:4,flip: data 'moons:n=600,test=200,seed=3' has samples of shape \\(2\\), not images; expected samples of shape \\(C, H, W\\), or augment = none$"
                train ${moons} --set optimizer.solver=sgd --set train.max_steps=1
                --set data.augment=crop:4,flip --set train.out=${runs}/train-augment-flat --overwrite)
quadra_cli_test(train-augment-bad 1 "config key data.augment: augment 'crop:4,flop': unknown part 'flop'; expected none, or crop:P"
                train ${moons} --set optimizer.solver=sgd --set train.max_steps=1
                --set data.augment=crop:4,flop --set train.out=${runs}/train-augment-bad --overwrite)
quadra_cli_test(config-cifar10-example 0 "^normalize = standardize-channel$ &&& ^augment = crop:4,flip$"
                config --config ${PROJECT_SOURCE_DIR}/examples/cifar10/train-cg-debiased.ini)
