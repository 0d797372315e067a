# Figures, `quadra config` on every kind of config, spectrum without a trace estimate, and where
# plugins come from. See CMakeLists.txt for quadra_cli_test().

# quadra train and quadra compare draw their curves with gnuplot; without it they say how to get
# them. The PNG files are checked when gnuplot is installed, and the test is skipped otherwise.
find_program(quadra_gnuplot gnuplot)
# quadra_figures_test(<name> <dir> <files> <regex> <args>...): runs quadra with <args>, expects
# exit status 0 and <regex> in its output, then non-empty PNG <files> (';'-list) in <dir>.
function(quadra_figures_test name dir files regex)
  string(REPLACE ";" " " file_words "${files}")
  add_test(NAME cli:${name}
           COMMAND sh -c "regex=$1; shift; \"$0\" 0 \"$regex\" -- \"$@\" || exit 1
                          command -v gnuplot >/dev/null || exit 77
                          for f in ${file_words}; do
                            test -s '${dir}'/\"$f\" || { echo \"missing ${dir}/$f\"; exit 1; }
                          done"
                   ${CMAKE_CURRENT_SOURCE_DIR}/expect.sh "${regex}" $<TARGET_FILE:quadra> ${ARGN})
  set_tests_properties(cli:${name} PROPERTIES ENVIRONMENT "QUADRA_PLUGIN_PATH=" SKIP_RETURN_CODE 77)
endfunction()

set(train_figures loss_vs_steps.png val_accuracy_vs_steps.png loss_vs_time.png val_accuracy_vs_time.png)
if(quadra_gnuplot)
  set(train_figures_line "^figures: loss_vs_steps.png, val_accuracy_vs_steps.png, loss_vs_time.png, val_accuracy_vs_time.png in ${runs}/train-figures$")
else()
  set(train_figures_line "^figures: install gnuplot to draw loss_vs_steps.png")
endif()
quadra_figures_test(train-figures ${runs}/train-figures "${train_figures}"
                    "^budget of 30 steps reached &&& ${train_figures_line}"
                    train ${moons} --set optimizer.solver=sgd --set train.max_steps=30
                    --set train.eval_every=5 --set train.out=${runs}/train-figures --overwrite)
# A regression run has no accuracy: only the loss is drawn.
quadra_figures_test(train-figures-regression ${runs}/train-figures-regression "loss_vs_steps.png;loss_vs_time.png"
                    "^figures: (loss_vs_steps.png, loss_vs_time.png in|install gnuplot to draw loss_vs_steps.png, loss_vs_time.png$)"
                    train --set "model.spec=linear(8) tanh linear(1)" --set data.source=sinusoid
                    --set optimizer.solver=adam --set train.max_steps=20 --set train.eval_every=5
                    --set train.progress=never --set train.out=${runs}/train-figures-regression --overwrite)
set(compare_figures val_loss_vs_steps.png val_accuracy_vs_steps.png val_loss_vs_time.png val_accuracy_vs_time.png)
quadra_figures_test(compare-figures ${runs}/compare-figures "${compare_figures}"
                    "^figures: (val_loss_vs_steps.png, val_accuracy_vs_steps.png, val_loss_vs_time.png, val_accuracy_vs_time.png in ${runs}/compare-figures$|install gnuplot)"
                    compare --config ${configs}/moons-compare.ini --set compare.out=${runs}/compare-figures
                    --overwrite)
# Without gnuplot on PATH: one line says how to get the figures, and the run succeeds.
find_program(quadra_bash bash)
find_program(quadra_grep grep)
set(no_gnuplot_path ${PROJECT_BINARY_DIR}/test-output/no-gnuplot-path)
file(MAKE_DIRECTORY ${no_gnuplot_path})
file(CREATE_LINK ${quadra_bash} ${no_gnuplot_path}/bash SYMBOLIC)
file(CREATE_LINK ${quadra_grep} ${no_gnuplot_path}/grep SYMBOLIC)
quadra_cli_test(train-figures-no-gnuplot 0
                "^figures: install gnuplot to draw loss_vs_steps.png, val_accuracy_vs_steps.png, loss_vs_time.png, val_accuracy_vs_time.png$"
                train ${moons} --set optimizer.solver=sgd --set train.max_steps=5
                --set train.out=${runs}/train-figures-no-gnuplot --overwrite)
set_tests_properties(cli:train-figures-no-gnuplot PROPERTIES ENVIRONMENT "QUADRA_PLUGIN_PATH=;PATH=${no_gnuplot_path}")

# quadra config checks each kind of config as the command that runs it does.
set(fmnist_examples ${PROJECT_SOURCE_DIR}/examples/fashion-mnist)
quadra_cli_test(config-train-file 0
                "^\\[model\\]$ &&& ^spec = linear\\(16\\) tanh linear\\(2\\)$ &&& ^max_failures = 10  # default$ &&& ^learning_rate = 0\\.2$ &&& ^solver = sgd$"
                config --config ${configs}/moons-train.ini)
quadra_cli_test(config-train-merged 0
                "^batch_size = 1000$ &&& ^max_seconds = 10$ &&& ^source = fashion-mnist  # default$ &&& ^max_iterations = 10$ &&& ^debiasing = cg-line-search$"
                config --config ${fmnist_examples}/cg-debiased.ini --set "model.spec=linear(256) tanh linear(10)"
                --set model.input_shape=784 --set train.max_seconds=10)
quadra_cli_test(config-optimizer-file 0
                "^# no \\[model\\] or \\[data\\]: an optimizer file, for quadra compare &&& ^\\[train\\]$ &&& ^batch_size = 1000$"
                config --config ${fmnist_examples}/cg-debiased.ini)
quadra_cli_test(config-compare-file 0
                "^\\[compare\\]$ &&& ^seeds = 0 1$ &&& ^# ---- moons-sgd: one run per seed S in runs/compare/moons-sgd/seedS &&& ^# ---- moons-cg: &&& ^solver = cg$ &&& ^max_steps = 10$"
                config --config ${configs}/moons-compare.ini)
quadra_cli_test(config-compare-fashion-mnist 0
                "^# ---- sgd: &&& ^# ---- eigen-newton-debiased: &&& ^# ---- kfac: one run per seed S in runs/compare/kfac/seedS"
                config --config ${fmnist_examples}/compare.ini)
quadra_cli_test(config-compare-resnet 0
                "^batch_norm = batch$ &&& ^# ---- kfac: one run per seed S in runs/resnet/compare/kfac/seedS &&& ^variant = mc$ &&& ^# ---- cg-debiased: "
                config --config ${PROJECT_SOURCE_DIR}/examples/resnet/compare.ini)
quadra_cli_test(config-compare-bad-optimizer 1
                "sets-budget.ini\": sets train.max_steps; the comparison's budget, seeds and outputs are set by the compare file alone"
                config --config ${configs}/bad-compare.ini)
quadra_cli_test(config-compare-needs-file 2 "a compare config needs --config FILE"
                config --set compare.optimizers=sgd.ini)
quadra_cli_test(config-train-no-budget 1 "config section \\[train\\] sets no budget"
                config --config ${configs}/moons-train.ini --set train.max_steps=0)
quadra_cli_test(config-train-no-solver 1 "the config chooses no solver"
                config --set "model.spec=linear(2)" --set train.max_steps=1)
quadra_cli_test(config-train-bad-spec 1 "^quadra: error: config key model.spec: "
                config --config ${configs}/moons-train.ini --set "model.spec=linear(16) tanh linaer(2)")
quadra_cli_test(config-train-bad-source 1 "^quadra: error: config key data.source: "
                config --config ${configs}/moons-train.ini --set data.source=moons:n=many)
quadra_cli_test(config-train-unknown-key 1 "unknown option 'epoch' for config section \\[train\\]"
                config --config ${configs}/moons-train.ini --set train.epoch=2)

# quadra spectrum --probes 0: no Hutchinson estimate, everything else as usual.
set(spectrum_moons --model "linear(8) tanh linear(2)" --data moons:n=600,test=200,seed=3 --batch-size 32 --top 2)
quadra_cli_test(spectrum-no-probes 0 "^# top 2 eigenvalues &&& ^# trace not estimated \\(--probes 0\\)$"
                spectrum ${spectrum_moons} --probes 0)
quadra_cli_test(spectrum-negative-probes 2 "quadra spectrum: --probes -1: expected 0 \\(no trace estimate\\) or more probes"
                spectrum ${spectrum_moons} --probes -1)
quadra_cli_test(spectrum-help-probes 0 "--probes 0 skips it" spectrum --help)

# Where plugins come from, and the build key.
quadra_cli_test(plugins-help-paths 0 "QUADRA_PLUGIN_PATH &&& --plugin-path DIR &&& build key"
                plugins --help)
quadra_cli_test(plugin-path-build-key 1
                "refused plugin .*libfixture_build_key_mismatch.*: build key mismatch: expected '[^']+', found 'clang-99/libc\\+\\+-1/eigen-3\\.4-align32-indexint' \\(rebuild the plugin with the compiler, standard library and Eigen that built quadra; quadra --version prints the key\\)"
                plugins --plugin-path ${fixture_root}/build_key_mismatch)
quadra_cli_test(plugin-path-environment 0 "solver +test-gradient" plugins)
set_tests_properties(cli:plugin-path-environment PROPERTIES
                     ENVIRONMENT "QUADRA_PLUGIN_PATH=::${fixture_root}/good:")
