# See CMakeLists.txt: quadra_cli_test(<name> <exit status> <regex> <args>...)

# ONNX files (tests/fixtures/onnx, written by make_onnx_fixtures.py) wherever a model is read:
# describe shows the state_dict names and buffers; curvature, spectrum, train, bias and laplace
# run on them; training-mode BatchNorm imports with batch statistics; unsupported ops are refused
# with the node.
if(NOT QUADRA_ONNX)
  return()
endif()
set(onnx ${PROJECT_SOURCE_DIR}/tests/fixtures/onnx)
quadra_cli_test(onnx-describe 0
                "^# model 'conv\\(4,3,stride=1,pad=1,name=stem\\) residual\\(.* on input 1x8x8: 1,[0-9]+ parameters, 15 buffers &&& ^layer2\\.down\\.0\\.weight +\\(8, 4, 1, 1\\) &&& ^layer2\\.down\\.1\\.running_var +\\(8,\\)"
                model describe --model ${onnx}/resnet.onnx)
quadra_cli_test(onnx-training-mode 0 "^# batchnorm: batch statistics \\(train mode"
                model describe --model ${onnx}/resnet_train.onnx)
quadra_cli_test(onnx-training-mode-running 0
                "^# batchnorm: running statistics &&& ^layer1\\.bn1\\.running_mean"
                model describe --model ${onnx}/resnet_train.onnx --batch-norm running)
quadra_cli_test(spec-batch-norm-batch 0 "^# batchnorm: batch statistics"
                model describe --model "linear(4) batchnorm" --input-shape 3 --batch-norm batch)
quadra_cli_test(batch-norm-bad-mode 1 "^quadra: error: --batch-norm 'frozen'; expected running"
                model describe --model "linear(4) batchnorm" --input-shape 3 --batch-norm frozen)
# Batch statistics couple the samples: per-sample quantities are refused.
quadra_cli_test(onnx-training-mode-per-sample 1
                "^quadra: error: the exact GGN diagonal: not defined for a network whose batchnorm normalises with batch statistics.*--batch-norm running"
                curvature --model ${onnx}/resnet_train.onnx --inputs ${onnx}/resnet_x.npy
                --targets ${onnx}/resnet_y.npy --diagonals --out ${runs}/onnx-train-per-sample)
quadra_cli_test(onnx-curvature 0 "^wrote loss\\.npy, per_sample_loss\\.npy, grad\\.npy"
                curvature --model ${onnx}/resnet.onnx --inputs ${onnx}/resnet_x.npy
                --targets ${onnx}/resnet_y.npy --precision float64 --out ${runs}/onnx-curvature)
quadra_cli_test(onnx-spectrum 0 "^# top 2 eigenvalues"
                spectrum --model ${onnx}/resnet.onnx --inputs ${onnx}/resnet_x.npy
                --targets ${onnx}/resnet_y.npy --curvature ggn --top 2)
quadra_cli_test(onnx-unsupported 1
                "^quadra: error: .*unsupported_softmax\\.onnx: node '/1/Softmax' \\(Softmax\\): this op is not supported"
                curvature --model ${onnx}/unsupported_softmax.onnx --inputs ${onnx}/resnet_x.npy
                --targets ${onnx}/resnet_y.npy --out ${runs}/onnx-unsupported)
quadra_cli_test(onnx-not-onnx 1 "^quadra: error: .*not_onnx\\.onnx: not an ONNX model"
                model describe --model ${onnx}/not_onnx.onnx)
set(onnx_moons --set "model.file=${onnx}/moons.onnx" --set "data.source=moons:n=600,test=200,seed=3"
               --set train.batch_size=50 --set train.progress=never)
quadra_cli_test(onnx-train 0 "^budget of 3 steps reached"
                train ${onnx_moons} --set optimizer.solver=cg --set optimizer.curvature=ggn
                --set train.max_steps=3 --set train.out=${runs}/onnx-train --overwrite)
quadra_cli_test(onnx-bias 0 "^# quadra bias: model 'linear\\(16,name=fc1\\) batchnorm\\(name=bn\\) tanh"
                bias --model ${onnx}/moons.onnx --data moons:n=600,test=200,seed=3 --batch-size 64
                --top 2 --repeats 2)
quadra_cli_test(onnx-laplace 0 "^test +map +0\\.[0-9]+"
                laplace --model ${onnx}/moons.onnx --data moons:n=600,test=200,seed=3 --normalize none
                --shift none --ood none --curvature-samples 200 --validation-samples 100
                --prior-grid 1e-2:1e4:7)
# A missing .onnx (or .npz) is a missing file, not a spec with an unknown layer.
quadra_cli_test(onnx-missing-file 1 "^quadra: error: cannot read ${runs}/missing\\.onnx: No such file"
                model describe --model ${runs}/missing.onnx)
# A training-mode export trains with batch statistics, or its running statistics when the config
# says so.
set(onnx_moons_train --set "model.file=${onnx}/moons_train.onnx" --set "data.source=moons:n=600,test=200,seed=3"
                     --set train.batch_size=50 --set train.progress=never --set optimizer.solver=sgd
                     --set train.max_steps=2)
quadra_cli_test(onnx-train-batch-statistics 0 "^budget of 2 steps reached"
                train ${onnx_moons_train} --set train.out=${runs}/onnx-train-bs --overwrite)
quadra_cli_test(onnx-train-running 0 "^budget of 2 steps reached"
                train ${onnx_moons_train} --set model.batch_norm=running --set train.out=${runs}/onnx-train-running --overwrite)
