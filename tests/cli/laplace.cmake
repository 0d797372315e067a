# See CMakeLists.txt: quadra_cli_test(<name> <exit status> <regex> <args>...)
#
# Laplace posteriors as files: quadra laplace --save, and quadra predict reproducing laplace's
# numbers from the file alone; per-layer prior precisions; the messages of bad posterior files,
# contradicting models and inputs. Moons runs use laplace_moons (CMakeLists.txt). Everything is
# written below ${runs}/posteriors and rewritten on each run.

set(posteriors ${runs}/posteriors)
set(moons_data --data moons:n=600,test=200,seed=3 --normalize none)
set(x2 --inputs ${PROJECT_SOURCE_DIR}/tests/fixtures/cli/x2.npy)  # 4 points, 2 features
set(y4 --targets ${PROJECT_SOURCE_DIR}/tests/fixtures/cli/y4.npy)

# quadra_posterior_roundtrip(<name> <laplace args>... -- <data args>... -- <predictive args>...):
# laplace --save, then predict on the same test set must give bitwise laplace's per-input
# probabilities and metrics for the saved variant and for the MAP network (posterior_roundtrip.sh).
function(quadra_posterior_roundtrip name)
  add_test(NAME cli:${name}
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/posterior_roundtrip.sh $<TARGET_FILE:quadra>
                   ${posteriors}/${name} ${ARGN})
  set_tests_properties(cli:${name} PROPERTIES ENVIRONMENT "QUADRA_PLUGIN_PATH=")
endfunction()

# Every structure, every predictive, both precisions, fixed, grid, marglik and per-layer priors.
# Without --predictive and --samples, predict takes the posterior's.
quadra_posterior_roundtrip(predict-roundtrip-kfac
                           ${laplace_moons} --prior-precision 1 --precision float64
                           -- ${moons_data} --precision float64 --)
quadra_posterior_roundtrip(predict-roundtrip-diag-glm-mc
                           ${laplace_moons} --structure diag --subset last-layer --debiasing same-data
                           --prior-precision 3 --predictive glm-mc --samples 30
                           -- ${moons_data} --)
quadra_posterior_roundtrip(predict-roundtrip-lowrank-nn-mc
                           ${laplace_moons} --structure lowrank --rank 5 --predictive nn-mc --samples 20
                           --prior-precision marglik --save-variant same-data
                           -- ${moons_data} -- --predictive nn-mc --samples 20 --seed 0)
quadra_posterior_roundtrip(predict-roundtrip-last-layer-full
                           ${laplace_moons} --structure last-layer-full --prior-precision per-layer
                           --precision float64 -- ${moons_data} --precision float64 --)
quadra_posterior_roundtrip(predict-roundtrip-full-per-layer
                           ${laplace_moons} --structure full --prior-precision per-layer --predictive glm-mc
                           --samples 25 --seed 4 -- ${moons_data} --seed 4 --)
quadra_posterior_roundtrip(predict-roundtrip-kfac-grid
                           ${laplace_moons} --debiasing independent -- ${moons_data} --)
if(NOT QUADRA_SANITIZE)  # the whole Fashion-MNIST test set: slow under the sanitizers
  quadra_posterior_roundtrip(predict-roundtrip-fmnist-kfac-per-layer
                             --model "linear(16) tanh linear(10)" --input-shape 784 --data fashion-mnist
                             --curvature-samples 200 --shift none --ood none --debiasing independent
                             --kfac-eigenvalues per-sample --prior-precision per-layer
                             -- --data fashion-mnist --)
endif()

# One posterior file (kfac, tau = 1) for the tests of single messages, and damaged copies of it.
set(posterior ${posteriors}/fixture/posterior.npz)
quadra_cli_test(posterior-fixture 0
                "^# saved the independent posterior \\(kfac, tau = 1 \\(fixed\\)\\) with its model to ${posterior}"
                laplace ${laplace_moons} --prior-precision 1 --save ${posterior})
set_tests_properties(cli:posterior-fixture PROPERTIES FIXTURES_SETUP cli-posterior)
function(quadra_posterior_test name status regex)
  quadra_cli_test(${name} ${status} "${regex}" ${ARGN})
  set_tests_properties(cli:${name} PROPERTIES FIXTURES_REQUIRED cli-posterior)
endfunction()

quadra_cli_test(predict-help 0 "usage: quadra predict \\[--model SPEC\\|FILE" predict --help)
quadra_cli_test(predict-map 0 "^# predictive map$ &&& ^accuracy 0\\.[0-9]+, NLL [0-9.]+, Brier [0-9.]+, ECE [0-9.]+, mean entropy [0-9.]+ on 200 labelled inputs &&& ^# wrote ${runs}/posteriors/map/\\{probabilities\\.npy,entropy\\.npy,predictions\\.csv,metrics\\.csv\\}"
                predict --model "linear(8) tanh linear(2)" ${moons_data} --out ${posteriors}/map)
quadra_cli_test(predict-map-inputs 0 "4 inputs: x2\\.npy \\(4 samples\\) &&& ^# wrote ${runs}/posteriors/map-inputs/\\{probabilities\\.npy,entropy\\.npy,predictions\\.csv\\}"
                predict --model "linear(8) tanh linear(2)" ${x2} --out ${posteriors}/map-inputs)
quadra_posterior_test(predict-posterior-only 0
                      "^# posterior ${posterior}: kfac on 42 parameters, independent, curvature kfac on 200 samples, N = 500, tau = 1 \\(fixed\\), fitted on moons:n=600,test=200,seed=3 &&& ^# predictive probit$ &&& ^accuracy 0\\.[0-9]+, NLL &&& ^# variance\\.npy: the variance of the linearised logits"
                      predict --posterior ${posterior} ${moons_data} --out ${posteriors}/posterior-only)
quadra_posterior_test(predict-model-and-posterior 0 "^# predictive glm-mc \\(7 samples, seed 2\\) &&& Monte-Carlo variance of each class probability over 7 draws"
                      predict --model ${posterior} --posterior ${posterior} ${moons_data} --split validation
                      --predictive glm-mc --samples 7 --seed 2 --out ${posteriors}/model-and-posterior)
quadra_posterior_test(predict-inputs-posterior 0 "4 inputs: x2\\.npy \\(4 samples\\) &&& ^# wrote ${runs}/posteriors/inputs-posterior/\\{probabilities\\.npy,entropy\\.npy,variance\\.npy,predictions\\.csv\\}"
                      predict --posterior ${posterior} ${x2} --out ${posteriors}/inputs-posterior)
quadra_posterior_test(predict-inputs-targets 0 "^accuracy [01]\\.[0-9]+, NLL [0-9.]+, .* on 4 labelled inputs &&& metrics\\.csv\\}"
                      predict --posterior ${posterior} ${x2} ${y4} --predictive nn-mc --samples 5
                      --out ${posteriors}/inputs-targets)
quadra_posterior_test(predict-wrong-spec 1
                      "quadra: error: --model linear\\(4\\) tanh linear\\(2\\) and --posterior ${posterior} hold different models: 'linear\\(4\\) tanh linear\\(2\\)' with input 2 against the posterior's 'linear\\(8\\) tanh linear\\(2\\)' with input 2; expected the model the posterior was fitted to \\(or leave out --model: the posterior file holds it\\)"
                      predict --model "linear(4) tanh linear(2)" --posterior ${posterior} ${moons_data} --out ${posteriors}/wrong)
quadra_posterior_test(predict-wrong-weights 1
                      "quadra: error: --model linear\\(8\\) tanh linear\\(2\\) and --posterior ${posterior} share the spec 'linear\\(8\\) tanh linear\\(2\\)' but not the weights: '0\\.weight' element 0 is [-0-9.e]+ in the model and [-0-9.e]+ in the posterior"
                      predict --model "linear(8) tanh linear(2)" --seed 1 --posterior ${posterior} ${moons_data} --out ${posteriors}/wrong)
quadra_posterior_test(predict-wrong-inputs 1 "x2\\.npy\": inputs have shape \\(4, 2\\) \\(2 features per sample\\); the model expects 784 per sample"
                      predict --model "linear(3)" --input-shape 784 ${x2} --out ${posteriors}/wrong)

# Usage mistakes and refusals.
quadra_cli_test(predict-no-model 2 "quadra predict: give --model SPEC\\|FILE, --posterior P\\.npz \\(which holds its model\\), or both"
                predict ${moons_data} --out ${posteriors}/wrong)
quadra_cli_test(predict-no-out 2 "quadra predict: the option '--out' is required but missing"
                predict --model "linear(2)" ${moons_data})
quadra_cli_test(predict-no-inputs 2 "quadra predict: give the inputs as --inputs X\\.npy or --data SOURCE"
                predict --model "linear(2)" --out ${posteriors}/wrong)
quadra_cli_test(predict-both-inputs 2 "quadra predict: give either --inputs or --data, not both"
                predict --model "linear(2)" ${x2} ${moons_data} --out ${posteriors}/wrong)
quadra_cli_test(predict-split-without-data 2 "quadra predict: --split goes with --data"
                predict --model "linear(2)" ${x2} --split validation --out ${posteriors}/wrong)
quadra_cli_test(predict-bad-split 2 "quadra predict: --split 'dev': expected test, validation or train"
                predict --model "linear(2)" ${moons_data} --split dev --out ${posteriors}/wrong)
quadra_cli_test(predict-needs-posterior 2 "quadra predict: --predictive probit needs --posterior \\(a file of quadra laplace --save\\); without one, predict gives the MAP network"
                predict --model "linear(2)" ${moons_data} --predictive probit --out ${posteriors}/wrong)
quadra_cli_test(predict-unknown-predictive 1 "quadra: error: predictive 'mc' is unknown; expected one of map, probit, glm-mc, nn-mc"
                predict --model "linear(2)" ${moons_data} --predictive mc --out ${posteriors}/wrong)
quadra_cli_test(predict-regression 1 "quadra: error: quadra predict gives class probabilities \\(cross-entropy\\); --loss mse was given"
                predict --model "linear(1)" --data sinusoid --loss mse --out ${posteriors}/wrong)
quadra_cli_test(predict-missing-posterior 1 "quadra: error: .*/nonexistent\\.npz"
                predict --posterior ${posteriors}/nonexistent.npz ${moons_data} --out ${posteriors}/wrong)
if(TEST cli:hostile-files)  # NaN inputs, from tests/fixtures/hostile/make_hostile.py
  set(hostile ${PROJECT_BINARY_DIR}/test-output/cli/hostile)
  quadra_cli_test(predict-inputs-nan 1 "quadra: error: \"[^\"]*X_nan\\.npy\": element 7 \\(index \\(2, 1\\)\\) is nan; expected finite numbers"
                  predict --model "linear(2)" --inputs ${hostile}/X_nan.npy --out ${posteriors}/wrong)
  set_tests_properties(cli:predict-inputs-nan PROPERTIES FIXTURES_REQUIRED cli-hostile)
endif()

# Damaged posterior files (tests/fixtures/posterior/make_bad_posteriors.py).
find_package(Python3 COMPONENTS Interpreter)
if(Python3_Interpreter_FOUND)
  set(bad ${posteriors}/bad)
  add_test(NAME cli:posterior-bad-files
           COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/tests/fixtures/posterior/make_bad_posteriors.py
                   ${posterior} ${bad})
  set_tests_properties(cli:posterior-bad-files PROPERTIES FIXTURES_SETUP cli-posterior-bad
                       FIXTURES_REQUIRED cli-posterior)
  function(quadra_bad_posterior_test name regex file)
    quadra_cli_test(${name} 1 "${regex}" predict --posterior ${bad}/${file} ${moons_data}
                    --out ${posteriors}/wrong)
    set_tests_properties(cli:${name} PROPERTIES FIXTURES_REQUIRED cli-posterior-bad)
  endfunction()
  quadra_bad_posterior_test(predict-posterior-truncated
                            "quadra: error: [^ ]*truncated\\.npz: not a NumPy \\.npz file \\(a ZIP archive\\)" truncated.npz)
  quadra_bad_posterior_test(predict-posterior-version
                            "quadra: error: \"[^\"]*version2\\.npz\": array '__laplace__\\.format_version' is 2; this quadra reads Laplace posterior files of version 1 only"
                            version2.npz)
  quadra_bad_posterior_test(predict-posterior-model-only
                            "quadra: error: \"[^\"]*model_only\\.npz\": not a Laplace posterior file: it has no array '__laplace__\\.format_version' \\(a model file; quadra laplace --save writes posterior files\\)"
                            model_only.npz)
  quadra_bad_posterior_test(predict-posterior-nan
                            "quadra: error: \"[^\"]*nan\\.npz\": array '__laplace__\\.0\\.values': element 0 \\(index \\(0, 0\\)\\) is nan; expected finite numbers"
                            nan.npz)
endif()

# quadra laplace: --save, --save-variant and per-layer prior precisions.
quadra_cli_test(laplace-save-variant 0 "^# saved the same-data posterior \\(lowrank, tau = [0-9.e+-]+ \\(marginal likelihood\\)\\) with its model to ${posteriors}/lowrank\\.npz"
                laplace ${laplace_moons} --structure lowrank --rank 4 --prior-precision marglik
                --save ${posteriors}/lowrank.npz --save-variant same-data)
quadra_cli_test(laplace-save-variant-not-run 2 "quadra laplace: --save-variant independent: --debiasing runs only same-data; expected one of them"
                laplace ${laplace_moons} --debiasing same-data --save ${posteriors}/wrong.npz --save-variant independent)
quadra_cli_test(laplace-save-variant-unknown 1 "quadra: error: debiasing 'both' is unknown; expected one of same-data, independent"
                laplace ${laplace_moons} --save ${posteriors}/wrong.npz --save-variant both)
quadra_cli_test(laplace-save-variant-needs-save 2 "quadra laplace: --save-variant needs --save FILE"
                laplace ${laplace_moons} --save-variant same-data)
quadra_cli_test(laplace-save-directory 1 "quadra: error: --save ${CMAKE_CURRENT_SOURCE_DIR}: is a directory; expected a file name such as posterior\\.npz"
                laplace ${laplace_moons} --save ${CMAKE_CURRENT_SOURCE_DIR})
quadra_cli_test(laplace-per-layer 0 "^# same-data: tau = \\[[0-9.e+-]+, [0-9.e+-]+\\] \\(marginal likelihood per layer\\) &&& ^# independent: tau = \\[[0-9.e+-]+, [0-9.e+-]+\\] \\(marginal likelihood per layer\\)"
                laplace ${laplace_moons} --prior-precision per-layer)
quadra_cli_test(laplace-per-layer-lowrank 1 "quadra: error: --prior-precision per-layer: a per-layer prior precision does not work with structure lowrank: lowrank keeps the top-k eigenvectors of C and gives their complement the prior alone"
                laplace ${laplace_moons} --structure lowrank --prior-precision per-layer)
